"""Ranked lists (q, [d]*n, targets) from a run: lightning-ir's RunDataset, which Rank-DistiLLM trains on.

The run is any first stage of the suite: BM25 searched live, a stored run file (a teacher's ranking: an LLM's, or
one made with `experiment=rank_distillm/teacher_run`), or a dataset's scoreddocs. Each judged query's top `depth`
are its candidates; every epoch draws `sample_size` of them per query by `sampling_strategy`:

* single_relevant: one judged-relevant candidate, then `sample_size - 1` non-relevant ones, uniformly (stage 1);
* top: the `sample_size` best-ranked (stage 2: the whole teacher list when sample_size = depth);
* random: `sample_size` uniformly, kept in rank order.

single_relevant's non-relevant draws are hard negatives, denoised as MinedTriples' are (data/negatives.py): a rank
window `negatives_from: [a, b]`, a ceiling `max_relative_score` relative to the drawn positive's score (the first
stage's, or a `rescorer`'s). The other strategies keep the first stage's list as it is and refuse the filters.

Targets, higher = better: `relevance` (the qrels label, 0 when unjudged), `rank` (depth - rank + 1, so the teacher's
first of 100 gets 100), or `score` (the run's score). With `add_docs_not_in_ranking`, judged-relevant documents the
run missed join the candidates (rank and score targets 0), so that single_relevant can draw them.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

from retrieval_exp.batches import BatchShape, RankedList
from retrieval_exp.data import irds
from retrieval_exp.data.negatives import NegativeFilter
from retrieval_exp.errors import UserError
from retrieval_exp.interfaces import Retriever, Sampler
from retrieval_exp.ir_types import NO_DOCUMENTS, ranked
from retrieval_exp.settings import Positive

log = logging.getLogger(__name__)
STRATEGIES = ("single_relevant", "top", "random")
TARGETS = ("relevance", "rank", "score")


def refuse_filters(strategy: str, negatives_from: Any, max_relative_score: Any, rescorer: Any) -> None:
    """Negative filters are for single_relevant's drawn negatives; with another strategy, one line."""
    filters = {"negatives_from": negatives_from, "max_relative_score": max_relative_score, "rescorer": rescorer}
    chosen = [name for name, value in filters.items() if value is not None]
    if chosen and strategy != "single_relevant":
        raise UserError(
            f"data.train.{chosen[0]} filters the negatives that sampling_strategy=single_relevant draws; "
            f"{strategy} keeps the first stage's list as it is: remove it"
        )


@dataclass(frozen=True)
class Candidates:
    """One query's candidates, best-ranked first (added relevant documents last), with their targets; for
    single_relevant, the relevant ones that can be drawn and, for each, the non-relevant ones that may join it."""

    query_id: str
    doc_ids: list[str]
    targets: dict[str, float]
    relevant: list[str]
    negatives: dict[str, list[str]]


class RankedLists(Sampler):
    """One list per judged query of `dataset` that can fill `sample_size` by the strategy; the others are dropped
    and counted (`data/queries_dropped`). The same (seed, epoch) draws the same lists."""

    batch_shape = BatchShape.RANKED_LISTS
    requires = ("docs", "queries", "qrels")

    def __init__(
        self,
        dataset: str,
        first_stage: Retriever,
        depth: Positive = 100,
        sample_size: int = 8,
        sampling_strategy: str = "single_relevant",
        targets: str = "relevance",
        add_docs_not_in_ranking: bool = False,
        min_relevance: int = 1,
        seed: int = 0,
        negatives_from: list[int] | None = None,
        max_relative_score: float | None = None,
        rescorer: Any = None,
    ) -> None:
        if sampling_strategy not in STRATEGIES:
            raise UserError(f"data.train.sampling_strategy={sampling_strategy!r} is not one of {', '.join(STRATEGIES)}")
        if targets not in TARGETS:
            raise UserError(f"data.train.targets={targets!r} is not one of {', '.join(TARGETS)}")
        if not 2 <= sample_size or (sampling_strategy != "single_relevant" and sample_size > depth):
            raise UserError(
                f"data.train.sample_size={sample_size} must be at least 2 and, for {sampling_strategy}, at most "
                f"depth={depth}: change one of them"
            )
        refuse_filters(sampling_strategy, negatives_from, max_relative_score, rescorer)
        self.filter = NegativeFilter(depth, negatives_from, max_relative_score, rescorer)
        self.dataset, self.first_stage, self.depth, self.sample_size = dataset, first_stage, depth, sample_size
        self.strategy, self.target_kind, self.add_missing = sampling_strategy, targets, add_docs_not_in_ranking
        super().__init__(seed)
        self.min_relevance = min_relevance
        self._lists: list[Candidates] | None = None

    def prepare(self) -> list[Candidates]:
        """The lists, read and drawn up on first use."""
        if self._lists is not None:
            return self._lists
        judged = irds.qrels(self.dataset)
        self.queries = {q: text for q, text in irds.queries(self.dataset).items() if q in judged}
        corpus = irds.corpus(self.dataset) if self.first_stage.needs_corpus else NO_DOCUMENTS
        run = self.first_stage.search(corpus, self.queries, self.depth)
        lists = [self._candidates(q, run.get(q, {}), judged[q]) for q in sorted(self.queries)]
        wanted = {d for c in lists for d in c.doc_ids}
        self.texts = irds.documents(self.dataset, wanted)
        unknown = sorted(wanted - self.texts.keys())
        if unknown:
            raise UserError(
                f"the first stage ranks {len(unknown)} documents that {self.dataset} does not have (e.g. "
                f"{unknown[0]!r}): give a run over this dataset's collection"
            )
        filtered: dict[str, float] = {}
        if self.strategy == "single_relevant":
            lists, filtered = self._denoised(lists, run)
        kept = [c for c in lists if self._fills(c)]
        self.report = {"data/lists": len(kept), "data/queries_dropped": len(lists) - len(kept)}
        self.report |= filtered
        if not kept:
            raise UserError(
                f"no judged query of {self.dataset} has enough candidates for sample_size={self.sample_size} "
                f"({self.strategy}, depth {self.depth}): lower sample_size or use a deeper run"
            )
        log.info(
            "%d ranked lists of %d from %s (%s, depth %d, %s targets); %d queries dropped",
            len(kept),
            self.sample_size,
            self.dataset,
            self.strategy,
            self.depth,
            self.target_kind,
            len(lists) - len(kept),
        )
        self._lists = kept
        return kept

    def _candidates(self, query_id: str, scored: dict[str, float], labels: dict[str, int]) -> Candidates:
        order = [d for d, _ in ranked(scored)][: self.depth]
        relevant = {d for d, label in labels.items() if label >= self.min_relevance}
        added = sorted(relevant - set(order)) if self.add_missing else []
        if self.target_kind == "relevance":
            targets = {d: float(labels.get(d, 0)) for d in order + added}
        elif self.target_kind == "rank":
            targets = {d: float(self.depth - rank) for rank, d in enumerate(order)} | dict.fromkeys(added, 0.0)
        else:
            targets = {d: scored[d] for d in order} | dict.fromkeys(added, 0.0)
        positives = [d for d in order + added if d in relevant]
        return Candidates(query_id, order + added, targets, positives, {})  # negatives: _denoised, single_relevant

    def _denoised(self, lists: list[Candidates], run: Any) -> tuple[list[Candidates], dict[str, float]]:
        """`lists` with each positive's negatives filtered (window, ceiling) and the positives left that can still
        fill a list; the filters' report."""
        pairs = [(c.query_id, positive) for c in lists for positive in c.relevant]
        relevant = {c.query_id: set(c.relevant) for c in lists}
        pools, report = self.filter.candidates(run, relevant, pairs, self.queries, self.texts)
        kept = iter(pools)
        denoised = []
        for c in lists:
            negatives = {positive: next(kept) for positive in c.relevant}
            drawable = [positive for positive in c.relevant if len(negatives[positive]) >= self.sample_size - 1]
            denoised.append(Candidates(c.query_id, c.doc_ids, c.targets, drawable, negatives))
        return denoised, report

    def _fills(self, candidates: Candidates) -> bool:
        if self.strategy == "single_relevant":
            return bool(candidates.relevant)
        return len(candidates.doc_ids) >= self.sample_size

    def __len__(self) -> int:
        return len(self.prepare())

    def epoch(self, epoch: int) -> list[RankedList]:
        """The lists of `epoch`, queries shuffled, documents drawn."""
        order = list(self.prepare())
        rng = self.epoch_rng(epoch)
        rng.shuffle(order)
        return [self._draw(candidates, rng) for candidates in order]

    def _draw(self, candidates: Candidates, rng: random.Random) -> RankedList:
        if self.strategy == "single_relevant":
            positive = rng.choice(candidates.relevant)
            docs = [positive, *rng.sample(candidates.negatives[positive], self.sample_size - 1)]
        elif self.strategy == "top":
            docs = candidates.doc_ids[: self.sample_size]
        else:
            picked = sorted(rng.sample(range(len(candidates.doc_ids)), self.sample_size))
            docs = [candidates.doc_ids[i] for i in picked]
        return RankedList(
            self.queries[candidates.query_id],
            tuple(self.texts[d] for d in docs),
            tuple(candidates.targets[d] for d in docs),
        )
