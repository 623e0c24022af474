"""Chunked exact search agrees with a full sort and with faiss."""

import pytest
import torch

from retrieval_exp.retrieval.dense import exact_top_k, faiss_top_k


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
def test_chunked_top_k_equals_full_sort(chunk_size: int) -> None:
    generator = torch.Generator().manual_seed(0)
    queries, docs = torch.randn(5, 8, generator=generator), torch.randn(100, 8, generator=generator)
    scores, indices = exact_top_k(queries, docs, k=10, chunk_size=chunk_size)
    full = (queries @ docs.T).topk(10, dim=1)
    assert torch.equal(indices, full.indices)
    assert torch.allclose(scores, full.values)


def test_k_larger_than_corpus_returns_everything_ranked() -> None:
    queries, docs = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.1, 0.0], [0.9, 0.0], [0.5, 0.0]])
    scores, indices = exact_top_k(queries, docs, k=1000, chunk_size=2)
    assert indices.tolist() == [[1, 2, 0]]
    assert scores[0].tolist() == pytest.approx([0.9, 0.5, 0.1])


def test_faiss_backend_agrees() -> None:
    generator = torch.Generator().manual_seed(1)
    queries, docs = torch.randn(4, 16, generator=generator), torch.randn(50, 16, generator=generator)
    exact_scores, exact_indices = exact_top_k(queries, docs, k=5, chunk_size=13)
    faiss_scores, faiss_indices = faiss_top_k(queries, [docs[:20], docs[20:]], k=5)
    assert torch.equal(exact_indices, faiss_indices)
    assert torch.allclose(exact_scores, faiss_scores, atol=1e-5)
