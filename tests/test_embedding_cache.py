"""The embedding cache: what keys it (model fingerprint, texts, precision), that a second evaluation of an unchanged
model encodes nothing, and that it gives the vectors the model gives."""

from pathlib import Path

import torch

from retrieval_exp.hardware import Hardware
from retrieval_exp.interfaces import Embedder
from retrieval_exp.models.bi_encoder import BiEncoder
from retrieval_exp.retrieval.dense import DenseRetriever
from retrieval_exp.retrieval.embedding_cache import embed_cached
from retrieval_exp.retrieval.rerank import Reranker
from retrieval_exp.retrieval.run import RunFile

TEXTS = ["vaccines train the immune system", "arctic sea ice has declined", "gut bacteria help digest fibre"]


class Counting:
    """Wraps a bi-encoder and counts the texts it is asked to encode."""

    def __init__(self, model: BiEncoder) -> None:
        self.model, self.encoded = model, 0

    def embed(self, texts, side, batch_size, autocast=None):  # noqa: ANN001, ANN201
        self.encoded += len(texts)
        return self.model.embed(texts, side, batch_size)

    def fingerprint(self) -> str:
        return self.model.fingerprint()


def test_an_unchanged_model_encodes_nothing_the_second_time(tmp_path: Path, tiny_bert: Path) -> None:
    model = Counting(BiEncoder(str(tiny_bert)))
    assert isinstance(model, Embedder)
    first = embed_cached(model, "texts-v1", TEXTS, Hardware(), tmp_path)
    again = embed_cached(model, "texts-v1", TEXTS, Hardware(), tmp_path)
    assert model.encoded == 3 and torch.equal(first, again)
    assert torch.allclose(first, model.model.embed(TEXTS, "doc", 8), atol=1e-6)
    embed_cached(model, "texts-v2", TEXTS, Hardware(), tmp_path)  # other texts
    embed_cached(model, "texts-v1", TEXTS, Hardware(precision="bf16"), tmp_path)  # other precision
    assert model.encoded == 9 and len(list(tmp_path.glob("*/complete"))) == 3
    assert not list(tmp_path.glob("*/*partial*"))
    embed_cached(model, "texts-v1", TEXTS, Hardware(), None)  # no cache: always computed, nothing stored
    assert model.encoded == 12 and len(list(tmp_path.glob("*/complete"))) == 3


def test_the_fingerprint_follows_weights_and_tokenisation(tiny_bert: Path) -> None:
    model = BiEncoder(str(tiny_bert))
    assert model.fingerprint() == BiEncoder(str(tiny_bert)).fingerprint()
    assert BiEncoder(str(tiny_bert), doc_length=16).fingerprint() != model.fingerprint()
    assert BiEncoder(str(tiny_bert), doc_prefix="passage: ").fingerprint() != model.fingerprint()
    assert BiEncoder(str(tiny_bert), pooling="cls").fingerprint() != model.fingerprint()
    before = model.fingerprint()
    with torch.no_grad():
        next(model.parameters())[0, 0] += 1e-3
    assert model.fingerprint() != before


def test_dense_retrieval_and_bi_encoder_reranking_read_the_cache(tmp_path: Path, tiny_bert: Path) -> None:
    from retrieval_exp.ir_types import Corpus, content_key

    ids = ["a", "b", "c"]
    corpus = Corpus(content_key(ids, TEXTS), ids, TEXTS)
    queries = {"q": "sea ice"}
    model = Counting(BiEncoder(str(tiny_bert)))
    dense = DenseRetriever(model, Hardware(), cache_dir=str(tmp_path))
    ranking = dense.search(corpus, queries, 3)
    assert dense.search(corpus, queries, 3) == ranking and model.encoded == 3 + 2  # docs once, the query twice
    (tmp_path / "first.run").write_text("q Q0 c 1 2.0 x\nq Q0 a 2 1.0 x\n")
    reranker = Reranker(model, Hardware(), RunFile(str(tmp_path / "first.run")), cache_dir=str(tmp_path))
    reranked = reranker.search(corpus, queries, 10)
    assert reranker.search(corpus, queries, 10) == reranked and model.encoded == 5 + 2 + 2
    plain = Reranker(BiEncoder(str(tiny_bert)), Hardware(), RunFile(str(tmp_path / "first.run")))
    assert plain.search(corpus, queries, 10).keys() == reranked.keys()
    for doc_id, score in reranked["q"].items():  # the same scores as the full-corpus search gives these documents
        assert abs(score - ranking["q"][doc_id]) < 1e-5
