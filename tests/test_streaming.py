"""The streaming paths (docpairs grouped in one pass, texts looked up in a docstore, chunk groups read by line
offset) give what the in-memory paths gave, on the tiny collection behind a real ir_datasets docstore."""

from __future__ import annotations

import json
import pickle
import random
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import ir_datasets
import numpy as np
import pytest
import torch
from ir_datasets.datasets.base import Dataset
from ir_datasets.datasets.beir import BeirTitleDoc
from ir_datasets.indices import PickleLz4FullStore

from retrieval_exp import hardware
from retrieval_exp.data import irds
from retrieval_exp.data.chunk_groups import ChunkGroups
from retrieval_exp.data.docpairs import first_pairs
from retrieval_exp.data.local import register_all
from retrieval_exp.data.triples import DocpairTriples
from retrieval_exp.hardware import Hardware
from retrieval_exp.ir_types import Corpus, content_key
from retrieval_exp.retrieval.dense import DenseRetriever
from retrieval_exp.retrieval.embedding_cache import cached_shards
from retrieval_exp.retrieval.rerank import Reranker
from retrieval_exp.retrieval.run import DatasetRun
from retrieval_exp.retrieval.shards import in_batches
from tests.conftest import compose_config


class DocPair(NamedTuple):
    query_id: str
    doc_id_a: str
    doc_id_b: str


class StoredDocs:
    """A corpus behind a real ir_datasets docstore (PickleLz4FullStore, the kind MS MARCO's passages have); counts
    the reads of the whole corpus, which a look-up must not need."""

    def __init__(self, source: Any, path: Path) -> None:
        self.source, self.whole_reads = source, 0
        self.store = PickleLz4FullStore(str(path), source.docs_iter, BeirTitleDoc, "doc_id", ["doc_id"])

    def docs_iter(self) -> Iterator[Any]:
        self.whole_reads += 1
        return self.source.docs_iter()

    def docs_store(self) -> PickleLz4FullStore:
        return self.store

    def docs_cls(self) -> type:
        return BeirTitleDoc


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, StoredDocs]:
    """tiny/train and tiny/test again as stored/train and stored/test, their documents in a docstore."""
    register_all(compose_config("data=tiny").data.register)
    docs = {}
    for split in ("train", "test"):
        tiny = ir_datasets.load(f"tiny/{split}")
        docs[split] = StoredDocs(tiny, tmp_path_factory.mktemp(split) / "docstore")
        ir_datasets.registry.register(f"stored/{split}", Dataset(docs[split], tiny))
    return docs


def grouped_in_memory(rows: list[DocPair], group_size: int, max_queries: int | None) -> list[tuple[str, list]]:
    """The grouping as it was first written: every query's first pairs held until the end."""
    groups: dict[str, list[tuple[str, str]]] = {}
    complete: list[str] = []
    for row in rows:
        group = groups.setdefault(row.query_id, [])
        if len(group) < group_size:
            group.append((row.doc_id_a, row.doc_id_b))
            if len(group) == group_size:
                complete.append(row.query_id)
                if max_queries and len(complete) == max_queries:
                    break
    return [(q, groups[q]) for q in complete]


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("max_queries", [None, 3])
def test_docpairs_grouped_in_one_pass_as_in_memory(interleaved: bool, max_queries: int | None) -> None:
    rng = random.Random(7)
    rows = [
        DocPair(f"q{q}", f"p{rng.randrange(5)}", f"n{rng.randrange(50)}")
        for q in range(40)
        for _ in range(rng.choice([2, 4, 5, 9]))
    ]
    if interleaved:
        rng.shuffle(rows)
    found, expected = first_pairs(lambda: iter(rows), 4, max_queries), grouped_in_memory(rows, 4, max_queries)
    assert found.queries == [q for q, _ in expected] and found.queries
    assert list(found.examples) == [(q, a, [b]) for q, pairs in expected for a, b in pairs]
    assert len(found.examples) == 4 * len(found.queries)
    if not interleaved:  # at most one query's incomplete group is held
        assert found.held_at_most == 3
    else:
        assert found.held_at_most > 4


def test_docpair_triples_read_their_texts_from_the_docstore(stored: dict[str, StoredDocs]) -> None:
    from_store, from_folder = (
        DocpairTriples("stored/train", group_size=2, seed=3),
        DocpairTriples("tiny/train", group_size=2, seed=3),
    )
    assert list(from_store.epoch(1)) == list(from_folder.epoch(1)) and len(from_store) == 8
    assert from_store.report["docpairs/held_at_most"] == 1
    texts = pickle.loads(pickle.dumps(from_store.texts))  # as data-loader workers get it: they open their own store
    assert isinstance(texts, irds.DocumentTexts) and texts["sleep1"] == from_folder.texts["sleep1"]
    assert stored["train"].whole_reads == 0


def test_reranking_reads_only_the_candidates(stored: dict[str, StoredDocs], tiny_bert: Path) -> None:
    from retrieval_exp.models.cross_encoder import CrossEncoder

    model = CrossEncoder(str(tiny_bert), query_length=8, doc_length=16)
    queries = irds.queries("tiny/test")
    reranked = Reranker(model, Hardware(), DatasetRun("stored/test"), depth=3).search(
        irds.corpus("stored/test"), queries, 10
    )
    whole = irds.corpus("tiny/test")
    eager = Corpus(whole.key, whole.ids, whole.texts)
    expected = Reranker(model, Hardware(), DatasetRun("tiny/test"), depth=3).search(eager, queries, 10)
    assert reranked == expected and sum(len(docs) for docs in reranked.values()) > len(queries)
    assert stored["test"].whole_reads == 0


def chunk_groups_in_memory(path: Path, size: int, seed: int, epoch: int) -> list[tuple[str, ...]]:
    """The chunk groups as they were first read: every line's texts held, shuffled, the lines shuffled."""
    rng, groups = random.Random(seed), []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            texts = list(row["text"] if isinstance(row, dict) else row)[:size]
            rng.shuffle(texts)
            groups.append(tuple(texts))
    rng.shuffle(groups)
    if epoch:
        random.Random(seed * 1_000_003 + epoch).shuffle(groups)
    return groups


def test_chunk_groups_read_by_line_offset_as_in_memory(tmp_path: Path) -> None:
    rng = random.Random(3)
    rows = [[f"chunk {i}.{j} ü" for j in range(rng.randrange(4, 9))] for i in range(50)]
    path = tmp_path / "groups.jsonl"
    path.write_text(
        "".join(
            json.dumps(row if i % 3 else {"src": "wiki", "text": row}, ensure_ascii=False) + "\n\n"
            for i, row in enumerate(rows)
        )
    )
    for epoch in (0, 1, 2):
        lazy = ChunkGroups(str(path), group_size=4, seed=11).epoch(epoch)
        assert list(lazy) == chunk_groups_in_memory(path, 4, 11, epoch)
    lines = ChunkGroups(str(path), group_size=4, seed=11).epoch(2)
    assert list(pickle.loads(pickle.dumps(lines[5:9]))) == list(lines)[5:9]


class Vectors:
    """An Embedder whose vector for a text is seeded by the text (unit length, 24 dimensions); counts what it
    encodes, and with `fail_after` raises on that call, as a preempted job stops."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.encoded, self.calls, self.fail_after = 0, 0, fail_after

    def embed(self, texts, side, batch_size, autocast=None):  # noqa: ANN001, ANN201
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("preempted")
        self.encoded += len(texts)
        rows = [torch.randn(24, generator=torch.Generator().manual_seed(zlib.crc32(t.encode()))) for t in texts]
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1)

    def fingerprint(self) -> str:
        return "seeded-vectors"


def corpus_of(size: int) -> Corpus:
    ids = [f"d{i}" for i in range(size)]
    texts = [f"document {i}" for i in range(size)]
    return Corpus(content_key(ids, texts), ids, texts)


QUERIES = {f"q{i}": f"query {i}" for i in range(12)}


def test_dense_search_over_shards_equals_the_search_in_memory(tmp_path: Path) -> None:
    corpus = corpus_of(230)
    in_memory = DenseRetriever(Vectors(), Hardware(), chunk_size=1000).search(corpus, QUERIES, 10)
    sharded = DenseRetriever(Vectors(), Hardware(), chunk_size=16, cache_dir=str(tmp_path), shard_size=50)
    assert runs_equal(sharded.search(corpus, QUERIES, 10), in_memory)
    (folder,) = tmp_path.iterdir()
    assert sorted(p.name for p in folder.iterdir()) == [
        "00000.npy",
        "00001.npy",
        "00002.npy",
        "00003.npy",
        "00004.npy",
        "complete",
    ]
    half = DenseRetriever(Vectors(), Hardware(), cache_dir=str(tmp_path), shard_size=50, dtype="float16")
    halved = half.search(corpus, QUERIES, 10)  # float16 vectors: the same documents but where two nearly tie
    overlap = sum(len(halved[q].keys() & in_memory[q].keys()) for q in QUERIES) / (10 * len(QUERIES))
    assert overlap > 0.95 and all(
        abs(halved[q][d] - in_memory[q][d]) < 2e-3 for q in QUERIES for d in halved[q].keys() & in_memory[q].keys()
    )
    dtypes = sorted(str(np.load(folder / "00000.npy").dtype) for folder in tmp_path.iterdir())
    assert dtypes == ["float16", "float32"]


def runs_equal(first: dict, second: dict) -> bool:  # noqa: ANN001
    """The same documents in the same order, scores equal to float32 rounding."""
    return (
        all(
            list(first[q]) == list(second[q]) and all(abs(first[q][d] - second[q][d]) < 1e-6 for d in first[q])
            for q in second
        )
        and first.keys() == second.keys()
    )


def test_an_interrupted_encoding_resumes_at_its_first_missing_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = corpus_of(230)
    cut_short = Vectors(fail_after=3)
    with pytest.raises(KeyboardInterrupt):
        cached_shards(cut_short, corpus.key, in_batches(corpus.texts), Hardware(), tmp_path, shard_size=50)
    assert cut_short.encoded == 150 and not list(tmp_path.glob("*/*partial*"))
    resumed, trims = Vectors(), []
    monkeypatch.setattr(hardware, "MALLOC_TRIM", trims.append)
    trimming = Hardware(trim_host_memory=True)
    shards = cached_shards(resumed, corpus.key, in_batches(corpus.texts), trimming, tmp_path, shard_size=50)
    assert resumed.encoded == 80 and len(shards) == 230  # shards 3 and 4 only
    assert trims == [0, 0]  # what each encoded shard freed is given back before the next
    whole = Vectors().embed(corpus.texts, "doc", 8)
    assert torch.equal(shards.load(torch.device("cpu")), whole)
    again = Vectors()
    cached_shards(again, corpus.key, in_batches(corpus.texts), Hardware(), tmp_path, shard_size=50)
    assert again.encoded == 0


def test_an_exhaustive_ivf_index_is_exact_and_an_approximate_one_reports_its_recall(tmp_path: Path) -> None:
    corpus = corpus_of(600)
    exact = DenseRetriever(Vectors(), Hardware()).search(corpus, QUERIES, 10)
    every_list = DenseRetriever(
        Vectors(), Hardware(), backend="faiss", faiss_index="IVF4,Flat", faiss_parameters="nprobe=4", chunk_size=100
    )
    assert {q: list(d) for q, d in every_list.search(corpus, QUERIES, 10).items()} == {
        q: list(d) for q, d in exact.items()
    }
    one_list = DenseRetriever(Vectors(), Hardware(), backend="faiss", faiss_index="IVF8,Flat", cache_dir=str(tmp_path))
    found = one_list.search(corpus, QUERIES, 10)
    recall = sum(len(found[q].keys() & exact[q].keys()) for q in QUERIES) / (10 * len(QUERIES))
    assert one_list.figures() == {"dense/recall_vs_exact": pytest.approx(recall)} and recall < 1


def test_bm25_indexes_a_streamed_corpus_as_a_held_one(stored: dict[str, StoredDocs], tmp_path: Path) -> None:
    from retrieval_exp.retrieval.bm25 import BM25

    whole = irds.corpus("tiny/train")
    held = Corpus(whole.key, list(whole.ids), list(whole.texts))
    queries = irds.queries("tiny/train")
    expected = BM25(index_root=str(tmp_path / "held")).search(held, queries, 5)
    irds._texts.cache_clear()
    streamed = irds.corpus("stored/train")
    assert streamed.key == held.key  # one streamed pass names the same content
    assert BM25(index_root=str(tmp_path / "streamed")).search(streamed, queries, 5) == expected
    assert irds._texts.cache_info().currsize == 0  # never read whole


def test_dense_retrieval_encodes_a_streamed_corpus_as_a_held_one(stored: dict[str, StoredDocs], tmp_path: Path) -> None:
    whole = irds.corpus("tiny/train")
    held = Corpus(whole.key, list(whole.ids), list(whole.texts))
    queries = irds.queries("tiny/train")
    expected = DenseRetriever(Vectors(), Hardware()).search(held, queries, 5)
    irds._texts.cache_clear()
    streamed = DenseRetriever(Vectors(), Hardware(), cache_dir=str(tmp_path), shard_size=7, chunk_size=4)
    assert runs_equal(streamed.search(irds.corpus("stored/train"), queries, 5), expected)
    assert irds._texts.cache_info().currsize == 0 and len(list(tmp_path.glob("*/0*.npy"))) > 1
