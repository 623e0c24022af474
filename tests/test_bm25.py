"""pyserini BM25 against Lucene's formula worked by hand on a four-document corpus, and index reuse."""

import json
import math
from pathlib import Path

import pytest

from retrieval_exp.data import irds
from retrieval_exp.data.local import register_beir_folder
from retrieval_exp.ir_types import Corpus
from retrieval_exp.retrieval.bm25 import BM25

DOCS = {"d1": "apple banana", "d2": "apple apple cherry", "d3": "banana cherry date", "d4": "elderberry fig"}


def lucene_bm25(tf: int, doc_length: int, docs_with_term: int, k1: float = 0.9, b: float = 0.4) -> float:
    """Lucene's BM25: idf * tf / (tf + k1 * (1 - b + b * dl / avgdl)), avgdl over this corpus (10 terms / 4 docs)."""
    idf = math.log(1 + (len(DOCS) - docs_with_term + 0.5) / (docs_with_term + 0.5))
    return idf * tf / (tf + k1 * (1 - b + b * doc_length / 2.5))


@pytest.fixture(scope="module")
def fruit_corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    folder = tmp_path_factory.mktemp("fruit")
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in DOCS.items())
    )
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "apple"}) + "\n")
    register_beir_folder("fruit/all", folder)
    return irds.corpus("fruit/all")


def test_scores_match_lucene_formula_by_hand(fruit_corpus: Corpus, tmp_path: Path) -> None:
    run = BM25(index_root=str(tmp_path)).search(fruit_corpus, {"q": "apple"}, depth=10)
    # 'apple' occurs in d1 (tf 1, length 2) and d2 (tf 2, length 3): d2 first, nothing else matches.
    assert list(sorted(run["q"], key=run["q"].get, reverse=True)) == ["d2", "d1"]
    assert run["q"]["d2"] == pytest.approx(lucene_bm25(2, 3, 2), abs=1e-4)
    assert run["q"]["d1"] == pytest.approx(lucene_bm25(1, 2, 2), abs=1e-4)


def test_two_term_query_adds_term_scores(fruit_corpus: Corpus, tmp_path: Path) -> None:
    run = BM25(index_root=str(tmp_path)).search(fruit_corpus, {"q": "banana date"}, depth=10)
    expected_d3 = lucene_bm25(1, 3, 2) + lucene_bm25(1, 3, 1)
    assert max(run["q"], key=run["q"].get) == "d3"
    assert run["q"]["d3"] == pytest.approx(expected_d3, abs=1e-4)


def test_index_is_built_once_and_reused(fruit_corpus: Corpus, tmp_path: Path) -> None:
    first = BM25(index_root=str(tmp_path)).index(fruit_corpus)
    stamp = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    second = BM25(k1=1.2, b=0.75, index_root=str(tmp_path)).index(fruit_corpus)
    assert second == first
    assert {p.name: p.stat().st_mtime_ns for p in second.iterdir()} == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]
