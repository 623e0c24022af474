"""Validation during training, with early stopping on one measure and the best-validated weights kept.

Two ways to rank a validation split, each every `every` steps and at the end of training:

- `RetrievalValidation` ranks it as the run's test collections are ranked (the run's own retriever: full dense
  retrieval for a bi-encoder, re-ranking the first stage for a cross-encoder), on a dev split or on training queries
  held out of training (data/held_out.py) where the collection has none.
- `RerankValidation` re-ranks the dataset's scoreddocs, as the self-distillation paper validates (TREC DL 2020's
  official BM25 top-1000), judged by the qrels (unjudged documents count as not relevant).

Training stops after `patience` validations without improvement of `measure`; every measure of `measures` is logged
as val/<measure>, and those of the best validation are the run's val/* results (what a tuning objective reads).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import ir_measures

from retrieval_exp.data import irds
from retrieval_exp.hardware import Hardware
from retrieval_exp.ir_types import Run
from retrieval_exp.measures import parse_measures
from retrieval_exp.retrieval.rerank import rerank
from retrieval_exp.retrieval.run import DatasetRun
from retrieval_exp.settings import Positive, Share
from retrieval_exp.training.patience import Patience


class Validation(Patience, ABC):
    """A validation split and its early-stopping state (saved with each checkpoint). `requires`: the parts the
    dataset must have. `held_out` and `held_out_seed` say how a split is drawn from the training queries when
    `dataset` is null (the recipe's check replaces it with the drawn split's id). The recipe passes
    `build_retriever`, the run's retriever waiting for its encoder."""

    requires: ClassVar[tuple[str, ...]] = ("queries", "qrels")

    def __init__(
        self,
        dataset: str,
        measure: str = "nDCG@10",
        measures: Sequence[str] = (),
        depth: Positive = 1000,
        every: Positive = 500,
        patience: Positive = 16,
        held_out: Share = 0.1,
        held_out_seed: int = 0,
        build_retriever: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(patience)
        self.build_retriever = build_retriever
        [self.measure] = parse_measures([measure])
        self.measures = parse_measures(list(dict.fromkeys([measure, *measures])))
        self.watched = f"validation {self.measure}"
        self.dataset, self.depth, self.every = dataset, depth, every
        self.held_out, self.held_out_seed = held_out, held_out_seed
        self.best_values: dict[str, float] = {}
        self.report: Callable[[float, int], bool] | None = None  # a tuning trial's: True when its pruner stops it
        self.pruned_at: int | None = None

    def score(self, model: Any, hardware: Hardware) -> dict[str, float]:
        """Every measure of the model's ranking of the validation split, by name."""
        queries, qrels = irds.queries(self.dataset), irds.qrels(self.dataset)
        judged = {query_id: text for query_id, text in queries.items() if query_id in qrels}
        found = ir_measures.calc_aggregate(self.measures, qrels, self.ranking(model, hardware, judged))
        return {str(measure): float(found[measure]) for measure in self.measures}

    def update_all(self, values: dict[str, float], step: int) -> bool:
        """Record a validation's values; True when its `measure` is the best so far."""
        value = values[str(self.measure)]
        improved = self.update(value, step)
        if improved:
            self.best_values = dict(values)
        if self.report is not None and self.report(value, step):
            self.pruned_at = step
        return improved

    @property
    def exhausted(self) -> bool:
        """The patience has run out, or the tuning study pruned the trial."""
        return self.bad_updates >= self.patience or self.pruned_at is not None

    @abstractmethod
    def ranking(self, model: Any, hardware: Hardware, queries: dict[str, str]) -> Run:
        """The model's ranking of the split for `queries`."""

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"best_values": self.best_values}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.best_values = state.get("best_values", {})


class RetrievalValidation(Validation):
    """The split ranked by the run's own retriever (built per validation: the weights change), top `depth`."""

    def ranking(self, model: Any, hardware: Hardware, queries: dict[str, str]) -> Run:
        if self.build_retriever is None:
            raise ValueError("RetrievalValidation ranks with the run's retriever: build it with build_retriever=")
        retriever = self.build_retriever(encoder=model, hardware=hardware)
        run: Run = retriever.search(irds.corpus(self.dataset), queries, self.depth)
        return run


class RerankValidation(Validation):
    """The top `depth` of the dataset's scoreddocs, re-ranked."""

    requires = ("queries", "qrels", "scoreddocs")

    def ranking(self, model: Any, hardware: Hardware, queries: dict[str, str]) -> Run:
        if not hasattr(self, "candidates"):
            every = DatasetRun(self.dataset).search(None, irds.queries(self.dataset), self.depth)
            self.candidates = {query_id: every.get(query_id, {}) for query_id in queries}
            wanted = {d for docs in self.candidates.values() for d in docs}
            self.texts = irds.documents(self.dataset, wanted)
        return rerank(model, queries, self.texts, self.candidates, hardware)
