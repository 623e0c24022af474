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
from retrieval_exp.hardware import Hardware
from retrieval_exp.measures import parse_measures
from retrieval_exp.retrieval.rerank import rerank
from retrieval_exp.retrieval.run import DatasetRun
from retrieval_exp.training.patience import Patience


class RerankValidation(Patience):
    """Re-ranking validation set and early-stopping state (saved with each checkpoint)."""

    def __init__(
        self, dataset: str, measure: str = "nDCG@10", depth: int = 1000, every: int = 500, patience: int = 16
    ) -> None:
        super().__init__(patience)
        [self.measure] = parse_measures([measure])
        self.watched = f"validation {self.measure}"
        self.dataset, self.depth, self.every = dataset, depth, every

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
