"""Validation during training by re-ranking a first-stage run, with early stopping on one measure.

As the self-distillation paper validates: every `every` steps the model re-ranks the top `depth` of the dataset's
scoreddocs (for TREC DL 2020, the official BM25 top-1000), judged by the qrels (unjudged documents count as not
relevant); training stops after `patience` validations without improvement, and the best-validated weights are
restored at the end.
"""

from __future__ import annotations

from typing import Any

import ir_measures

from retrieval_exp.data import irds
from retrieval_exp.evaluation import parse_measures
from retrieval_exp.hardware import Hardware
from retrieval_exp.retrieval.rerank import rerank
from retrieval_exp.retrieval.run import DatasetRun


class RerankValidation:
    """Re-ranking validation set and early-stopping state (saved with each checkpoint)."""

    def __init__(
        self, dataset: str, measure: str = "nDCG@10", depth: int = 1000, every: int = 500, patience: int = 16
    ) -> None:
        [self.measure] = parse_measures([measure])
        self.dataset, self.depth, self.every, self.patience = dataset, depth, every, patience
        self.best: float | None = None
        self.best_step = 0
        self.bad_validations = 0

    def prepare(self) -> None:
        if hasattr(self, "candidates"):
            return
        self.queries = irds.queries(self.dataset)
        self.candidates = DatasetRun(self.dataset).search(None, self.queries, self.depth)
        self.texts = irds.documents(self.dataset, {d for docs in self.candidates.values() for d in docs})
        self.qrels = irds.qrels(self.dataset)

    def score(self, model: Any, hardware: Hardware) -> float:
        """The measure of the model's re-ranking."""
        self.prepare()
        run = rerank(model, self.queries, self.texts, self.candidates, hardware)
        return float(ir_measures.calc_aggregate([self.measure], self.qrels, run)[self.measure])

    def update(self, value: float, step: int) -> bool:
        """Record a validation; True when it is the best so far."""
        if self.best is None or value > self.best:
            self.best, self.best_step, self.bad_validations = value, step, 0
            return True
        self.bad_validations += 1
        return False

    @property
    def exhausted(self) -> bool:
        return self.bad_validations >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "bad_validations": self.bad_validations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_step, self.bad_validations = state["best"], state["best_step"], state["bad_validations"]
