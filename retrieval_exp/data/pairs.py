"""Scored pairs (q, d, t): every relevant (query, document) pair of a dataset's qrels with its teacher score, kept
or dropped by a selective-distillation rule (Method 3, docs/METHODS.md, section 3)."""

from __future__ import annotations

import logging
from typing import Any

from retrieval_exp.batches import BatchShape
from retrieval_exp.data import irds
from retrieval_exp.data.examples import Example
from retrieval_exp.data.teacher import TeacherScores
from retrieval_exp.data.triples import TripleSampler

log = logging.getLogger(__name__)


class ScoredPairs(TripleSampler):
    """One example per relevant pair of `dataset`'s qrels, as a triple without negatives: the batch's other
    documents are the negatives. `selection` (data.selection.TopPercentile, AboveMeanSigma, or None for all) picks
    the pairs once the teacher has scored them; the pairs it drops are never seen in training."""

    batch_shape = BatchShape.SCORED_PAIRS

    def __init__(
        self,
        dataset: str,
        selection: Any = None,
        min_relevance: int = 1,
        seed: int = 0,
        unique_queries: bool = False,
        batch_size: int = 0,
    ) -> None:
        super().__init__(dataset, 0, seed, unique_queries, batch_size)
        self.selection, self.min_relevance = selection, min_relevance

    def load(self) -> tuple[dict[str, str], dict[str, str], list[Example]]:
        queries = irds.queries(self.dataset)
        judged = irds.qrels(self.dataset)
        doc_ids = {
            d for q, docs in judged.items() if q in queries for d, rel in docs.items() if rel >= self.min_relevance
        }
        texts = irds.documents(self.dataset, doc_ids)
        examples: list[Example] = [
            (q, d, [])
            for q in sorted(judged)
            if q in queries
            for d, rel in sorted(judged[q].items())
            if rel >= self.min_relevance and d in texts
        ]
        log.info("%d scored pairs from the qrels of %s", len(examples), self.dataset)
        return queries, texts, examples

    def attach_teacher(self, teacher: TeacherScores) -> None:
        super().attach_teacher(teacher)
        if self.selection is None:
            return
        scored = self.scored_positives()
        kept = self.selection.keep([score for _, score in scored])
        self._examples = [self._examples[i] for i in sorted(kept.positions)]
        self.report |= {
            "selection/threshold": kept.threshold,
            "selection/kept": len(kept.positions),
            "selection/kept_share": len(kept.positions) / len(scored),
        }
        log.info(
            "selective distillation keeps %d of %d pairs (teacher score >= %.4f)",
            len(kept.positions),
            len(scored),
            kept.threshold,
        )
