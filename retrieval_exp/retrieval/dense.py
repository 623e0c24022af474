"""Full-corpus dense retrieval: exact top-k by inner product, in corpus chunks (memory bounded), or faiss."""

from __future__ import annotations

import torch

from retrieval_exp.errors import UserError
from retrieval_exp.hardware import Hardware
from retrieval_exp.interfaces import Embedder, ModelKind, Retriever
from retrieval_exp.ir_types import Corpus, Run
from retrieval_exp.retrieval.embedding_cache import embed_cached
from retrieval_exp.settings import Positive

BACKENDS = ("torch", "faiss")


def exact_top_k(
    queries: torch.Tensor, docs: torch.Tensor, k: int, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and indices of the k best documents per query; holds at most (queries x chunk_size) scores at once."""
    k = min(k, docs.shape[0])
    best_scores = torch.full((queries.shape[0], 0), float("-inf"), device=queries.device)
    best_index = torch.zeros((queries.shape[0], 0), dtype=torch.long, device=queries.device)
    for start in range(0, docs.shape[0], chunk_size):
        scores = queries @ docs[start : start + chunk_size].T
        top = scores.topk(min(k, scores.shape[1]), dim=1)
        merged_scores = torch.cat([best_scores, top.values], dim=1)
        merged_index = torch.cat([best_index, top.indices + start], dim=1)
        keep = merged_scores.topk(min(k, merged_scores.shape[1]), dim=1)
        best_scores, best_index = keep.values, merged_index.gather(1, keep.indices)
    return best_scores, best_index


def faiss_top_k(queries: torch.Tensor, docs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same search through a faiss IndexFlatIP (exact inner product, on CPU)."""
    import faiss

    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(docs.float().cpu().numpy())
    scores, indices = index.search(queries.float().cpu().numpy(), min(k, docs.shape[0]))
    return torch.from_numpy(scores), torch.from_numpy(indices)


class DenseRetriever(Retriever):
    """Encodes the whole corpus with the run's bi-encoder (its vectors kept in `cache_dir` when set), then searches
    it exhaustively."""

    name = "dense"
    needs_encoder = True
    model_kinds = (ModelKind.BI_ENCODER, ModelKind.REVELA)  # a Revela model retrieves with its retriever

    def __init__(
        self,
        encoder: Embedder,
        hardware: Hardware,
        backend: str = "torch",
        chunk_size: Positive = 65_536,
        cache_dir: str | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise UserError(f"retriever.backend={backend!r} is not one of {', '.join(BACKENDS)}")
        self.encoder, self.hardware, self.backend, self.chunk_size = encoder, hardware, backend, chunk_size
        self.cache_dir = cache_dir

    def search(self, corpus: Corpus, queries: dict[str, str], depth: int) -> Run:
        batch = self.hardware.encode_batch_size
        docs = embed_cached(self.encoder, corpus.key, corpus.texts, self.hardware, self.cache_dir)
        query_ids = list(queries)
        vectors = self.encoder.embed([queries[q] for q in query_ids], "query", batch, self.hardware.autocast)
        if self.backend == "faiss":
            scores, indices = faiss_top_k(vectors, docs, depth)
        else:
            scores, indices = exact_top_k(vectors, docs, depth, self.chunk_size)
        return {
            query_id: {corpus.ids[i]: s for i, s in zip(row_index, row_scores)}
            for query_id, row_index, row_scores in zip(query_ids, indices.tolist(), scores.tolist())
        }
