"""Re-ranking: a model scores the top `depth` of a first stage (BM25, a stored run, a dataset's scoreddocs), and
only those documents; the first stage's run is kept so that the recipe reports it beside the re-ranked one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from retrieval_exp.data.irds import Corpus
from retrieval_exp.hardware import Hardware
from retrieval_exp.retrieval.run import Run


def rerank(
    model: Any, queries: Mapping[str, str], texts: Mapping[str, str], candidates: Run, hardware: Hardware
) -> Run:
    """`model`'s scores (any model with score_pairs: cross- or bi-encoder) for exactly the `candidates`."""
    pairs = [(q, d) for q, docs in candidates.items() for d in docs]
    scores = model.score_pairs(queries, texts, pairs, hardware.encode_batch_size, hardware.autocast)
    run: Run = {q: {} for q in candidates}
    for (query_id, doc_id), score in zip(pairs, scores):
        run[query_id][doc_id] = score
    return run


class Reranker:
    """Re-ranks `first_stage`'s top `depth` with the run's model."""

    name = "rerank"
    needs_encoder = True
    model_kinds = ("cross_encoder", "bi_encoder")

    def __init__(self, encoder: Any, hardware: Hardware, first_stage: Any, depth: int = 100) -> None:
        self.model, self.hardware, self.first_stage, self.depth = encoder, hardware, first_stage, depth
        self.candidates: Run = {}

    def search(self, corpus: Corpus, queries: dict[str, str], depth: int) -> Run:
        """The re-ranked top min(depth, self.depth) of the first stage; its run stays in `candidates`."""
        self.candidates = self.first_stage.search(corpus, queries, min(depth, self.depth))
        wanted = {d for docs in self.candidates.values() for d in docs}
        texts = {d: t for d, t in zip(corpus.ids, corpus.texts) if d in wanted}
        return rerank(self.model, queries, texts, self.candidates, self.hardware)
