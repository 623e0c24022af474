"""Re-ranking: a model scores the top `depth` of a first stage (BM25, a stored run, a dataset's scoreddocs), and
only those documents; the first stage's run is kept so that the recipe reports it beside the re-ranked one."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from retrieval_exp.hardware import Hardware
from retrieval_exp.interfaces import Embedder, ModelKind, PairScorer, Retriever, TwoStageRetriever
from retrieval_exp.ir_types import Corpus, Run, content_key
from retrieval_exp.retrieval.embedding_cache import embed_cached
from retrieval_exp.settings import Positive


def rerank(
    model: PairScorer, queries: Mapping[str, str], texts: Mapping[str, str], candidates: Run, hardware: Hardware
) -> Run:
    """`model`'s scores (any model with score_pairs: cross- or bi-encoder) for exactly the `candidates`."""
    pairs = [(q, d) for q, docs in candidates.items() for d in docs]
    scores = model.score_pairs(queries, texts, pairs, hardware.encode_batch_size, hardware.autocast)
    run: Run = {q: {} for q in candidates}
    for (query_id, doc_id), score in zip(pairs, scores):
        run[query_id][doc_id] = score
    return run


def rerank_by_vectors(
    model: Embedder,
    queries: Mapping[str, str],
    texts: Mapping[str, str],
    candidates: Run,
    hardware: Hardware,
    cache_dir: str | None,
) -> Run:
    """A bi-encoder's dot products for exactly the `candidates`, their document vectors through the embedding
    cache (keyed by the candidates' texts)."""
    doc_ids = sorted({d for docs in candidates.values() for d in docs})
    doc_texts = [texts[d] for d in doc_ids]
    docs = embed_cached(model, content_key(doc_ids, doc_texts), doc_texts, hardware, cache_dir)
    query_ids = list(candidates)
    vectors = model.embed([queries[q] for q in query_ids], "query", hardware.encode_batch_size, hardware.autocast)
    row = {d: i for i, d in enumerate(doc_ids)}
    run: Run = {}
    for query_id, vector in zip(query_ids, vectors):
        ids = list(candidates[query_id])
        scores = docs[torch.tensor([row[d] for d in ids], dtype=torch.long)] @ vector if ids else vector[:0]
        run[query_id] = dict(zip(ids, scores.tolist()))
    return run


class Reranker(TwoStageRetriever):
    """Re-ranks `first_stage`'s top `depth` with the run's model; a bi-encoder's document vectors are kept in
    `cache_dir` when set."""

    name = "rerank"
    needs_encoder = True
    model_kinds = (ModelKind.CROSS_ENCODER, ModelKind.BI_ENCODER)

    def __init__(
        self,
        encoder: PairScorer,
        hardware: Hardware,
        first_stage: Retriever,
        depth: Positive = 100,
        cache_dir: str | None = None,
    ) -> None:
        self.model, self.hardware, self.first_stage, self.depth = encoder, hardware, first_stage, depth
        self.cache_dir = cache_dir
        self.candidates: Run = {}

    def search(self, corpus: Corpus, queries: dict[str, str], depth: int) -> Run:
        """The re-ranked top min(depth, self.depth) of the first stage; its run stays in `candidates`."""
        self.candidates = self.first_stage.search(corpus, queries, min(depth, self.depth))
        texts = corpus.texts_of(d for docs in self.candidates.values() for d in docs)
        if isinstance(self.model, Embedder):
            return rerank_by_vectors(self.model, queries, texts, self.candidates, self.hardware, self.cache_dir)
        return rerank(self.model, queries, texts, self.candidates, self.hardware)


class FirstStage(Retriever):
    """A first stage evaluated as it is: on a pool collection its own run (TREC DL's shipped BM25 or SPLADE++ top
    100), elsewhere `first_stage` (BM25 by default). The baseline rows of a benchmark."""

    name = "first_stage"

    def __init__(self, first_stage: Retriever) -> None:
        self.first_stage = first_stage

    def search(self, corpus: Corpus, queries: dict[str, str], depth: int) -> Run:
        return self.first_stage.search(corpus, queries, depth)
