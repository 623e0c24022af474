"""Full-corpus dense retrieval: exact top-k by inner product, block by block (memory bounded; from vectors in memory
or in shards on disk), or through a faiss index, exact or approximate."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any, get_args

import numpy as np
import torch

from retrieval_exp.errors import UserError
from retrieval_exp.hardware import Hardware
from retrieval_exp.interfaces import Embedder, ModelKind, Retriever
from retrieval_exp.ir_types import Corpus, Run
from retrieval_exp.retrieval.embedding_cache import cached_shards
from retrieval_exp.retrieval.shards import VectorDtype
from retrieval_exp.settings import Positive

BACKENDS = ("torch", "faiss")


def exact_top_k(
    queries: torch.Tensor, docs: torch.Tensor, k: int, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and indices of the k best documents per query; holds at most (queries x chunk_size) scores at once."""
    return top_k_over_blocks(queries, _blocks(docs, chunk_size), k)


def _texts(corpus: Corpus, size: int) -> Iterator[list[str]]:
    """The corpus's texts `size` at a time, streamed (Corpus.batches)."""
    return (texts for _, texts in corpus.batches(size))


def _blocks(docs: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    """`docs` `size` rows at a time, as float32 (vectors kept in float16 are scored in float32)."""
    return (docs[start : start + size].float() for start in range(0, len(docs), size))


def top_k_over_blocks(
    queries: torch.Tensor, blocks: Iterable[torch.Tensor], k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """exact_top_k over the documents' vectors given block by block, in order (from memory, or from shards on
    disk): the running top k is merged with each block's, so only one block's scores are held."""
    best_scores = torch.full((queries.shape[0], 0), float("-inf"), device=queries.device)
    best_index = torch.zeros((queries.shape[0], 0), dtype=torch.long, device=queries.device)
    start = 0
    for block in blocks:
        scores = queries @ block.T
        top = scores.topk(min(k, scores.shape[1]), dim=1)
        del scores  # before the next block's are made: one block of scores at a time, not two
        merged_scores = torch.cat([best_scores, top.values], dim=1)
        merged_index = torch.cat([best_index, top.indices + start], dim=1)
        keep = merged_scores.topk(min(k, merged_scores.shape[1]), dim=1)
        best_scores, best_index = keep.values, merged_index.gather(1, keep.indices)
        start += block.shape[0]
    return best_scores, best_index


def faiss_top_k(
    queries: torch.Tensor, blocks: Iterable[torch.Tensor], k: int, index: str = "Flat", parameters: str = ""
) -> tuple[torch.Tensor, torch.Tensor]:
    """The search through a faiss index (inner product, on CPU) that `index` names to faiss.index_factory: "Flat" is
    exact; "HNSW32" and "IVF4096,Flat" are approximate, an IVF index trained on the first 256 vectors per list (the
    most faiss uses). `parameters` are faiss's search settings ("nprobe=64", "efSearch=256")."""
    import faiss

    built: Any = None
    untrained: list[np.ndarray] = []
    for block in blocks:
        vectors = np.ascontiguousarray(block.float().cpu().numpy())
        if built is None:
            built = faiss.index_factory(vectors.shape[1], index, faiss.METRIC_INNER_PRODUCT)
        if built.is_trained:
            built.add(vectors)
            continue
        untrained.append(vectors)
        if sum(map(len, untrained)) >= 256 * faiss.extract_index_ivf(built).nlist:
            _train_and_add(built, untrained)
            untrained = []
    if built is None:
        return torch.zeros((len(queries), 0)), torch.zeros((len(queries), 0), dtype=torch.long)
    if untrained:
        _train_and_add(built, untrained)
    if parameters:
        faiss.ParameterSpace().set_index_parameters(built, parameters)  # type: ignore[arg-type]  # faiss's stub lists only the int overload
    scores, indices = built.search(np.ascontiguousarray(queries.float().cpu().numpy()), min(k, built.ntotal))
    return torch.from_numpy(scores), torch.from_numpy(indices)


def _check_faiss_index(index: str) -> None:
    """One line, at start-up, for a factory string faiss cannot build (tried on 64 dimensions)."""
    import faiss

    try:
        faiss.index_factory(64, index, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        reason = str(err).strip().rsplit(": ", 1)[-1]
        raise UserError(
            f"retriever.faiss_index={index!r} is not an index faiss can build ({reason}): use a faiss.index_factory "
            "string such as Flat, HNSW32 or IVF4096,Flat"
        ) from None


def _train_and_add(index: Any, parts: list[np.ndarray]) -> None:
    vectors = np.concatenate(parts)
    index.train(vectors)
    index.add(vectors)


def recall_against_exact(approximate: torch.Tensor, exact: torch.Tensor) -> float:
    """The share of exact search's top k (indices, one row per query) that an approximate search found too."""
    found = sum(len(set(a) & set(e)) for a, e in zip(approximate.tolist(), exact.tolist()))
    return found / max(1, exact.numel())


class DenseRetriever(Retriever):
    """Encodes the whole corpus with the run's bi-encoder, then searches it. With `cache_dir`, the vectors are shards
    on disk (reused when the model is unchanged, resumed when an encoding was cut short) and the search streams over
    them memory-mapped, `chunk_size` vectors at a time; `dtype: float16` halves their size. `backend: faiss` searches
    a faiss index (`faiss_index`, see faiss_top_k); an approximate one reports its recall against exact search on
    the first `recall_queries` queries (dense/recall_vs_exact)."""

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
        dtype: VectorDtype = "float32",
        shard_size: Positive = 100_000,
        faiss_index: str = "Flat",
        faiss_parameters: str = "",
        recall_queries: int = 100,
    ) -> None:
        if backend not in BACKENDS:
            raise UserError(f"retriever.backend={backend!r} is not one of {', '.join(BACKENDS)}")
        if dtype not in get_args(VectorDtype):
            raise UserError(f"retriever.dtype={dtype!r} is not one of {', '.join(get_args(VectorDtype))}")
        if backend == "faiss":
            _check_faiss_index(faiss_index)
        self.encoder, self.hardware, self.backend, self.chunk_size = encoder, hardware, backend, chunk_size
        self.cache_dir, self.dtype, self.shard_size = cache_dir, dtype, shard_size
        self.faiss_index, self.faiss_parameters, self.recall_queries = faiss_index, faiss_parameters, recall_queries
        self._figures: dict[str, float] = {}

    def blocks(self, corpus: Corpus) -> Callable[[], Iterator[torch.Tensor]]:
        """What yields the corpus's vectors block by block: from shards on disk, or from memory."""
        if self.cache_dir is not None:
            shards = cached_shards(
                self.encoder,
                corpus.key,
                partial(_texts, corpus),
                self.hardware,
                self.cache_dir,
                self.shard_size,
                self.dtype,
            )
            return lambda: shards.blocks(self.chunk_size, self.hardware.torch_device)
        docs = self.encoder.embed(corpus.texts, "doc", self.hardware.encode_batch_size, self.hardware.autocast)
        docs = docs.to(getattr(torch, self.dtype))
        return lambda: _blocks(docs, self.chunk_size)

    def search(self, corpus: Corpus, queries: dict[str, str], depth: int) -> Run:
        blocks = self.blocks(corpus)
        query_ids = list(queries)
        batch = self.hardware.encode_batch_size
        vectors = self.encoder.embed([queries[q] for q in query_ids], "query", batch, self.hardware.autocast)
        self._figures = {}
        if self.backend == "faiss":
            scores, indices = faiss_top_k(vectors, blocks(), depth, self.faiss_index, self.faiss_parameters)
            if self.faiss_index != "Flat" and self.recall_queries:
                sample = slice(0, self.recall_queries)
                exact = top_k_over_blocks(vectors[sample], blocks(), depth)[1]
                self._figures["dense/recall_vs_exact"] = recall_against_exact(indices[sample], exact)
        else:
            scores, indices = top_k_over_blocks(vectors, blocks(), depth)
        return {
            query_id: {corpus.ids[i]: s for i, s in zip(row_index, row_scores) if i >= 0}
            for query_id, row_index, row_scores in zip(query_ids, indices.tolist(), scores.tolist())
        }

    def figures(self) -> dict[str, float]:
        return self._figures
