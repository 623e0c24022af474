"""Training triples from the tiny fixture's qrels with BM25-mined negatives."""

from pathlib import Path

import pytest

from retrieval_exp.data import irds
from retrieval_exp.data.local import register_all
from retrieval_exp.data.triples import DocpairTriples, MinedTriples
from retrieval_exp.errors import UserError
from retrieval_exp.retrieval.bm25 import BM25
from retrieval_exp.retrieval.run import RunFile
from tests.conftest import compose_config


@pytest.fixture(autouse=True, scope="module")
def tiny_registered() -> None:
    register_all(compose_config("data=tiny").data.register)


def sampler(seed: int = 0, negatives: int = 2) -> MinedTriples:
    return MinedTriples("tiny/train", BM25(), negatives=negatives, depth=5, seed=seed)


def test_one_example_per_relevant_pair() -> None:
    qrels = irds.qrels("tiny/train")
    assert len(sampler()) == sum(len(docs) for docs in qrels.values()) == 14


def test_negatives_are_never_judged_relevant() -> None:
    samples = sampler()
    corpus = irds.corpus("tiny/train")
    text_to_id = dict(zip(corpus.texts, corpus.ids))
    queries = {text: qid for qid, text in irds.queries("tiny/train").items()}
    qrels = irds.qrels("tiny/train")
    for triple in samples.epoch(0):
        relevant = set(qrels[queries[triple.query]])
        assert text_to_id[triple.positive] in relevant
        assert len(triple.negatives) == 2
        assert not {text_to_id[n] for n in triple.negatives} & relevant


def test_epochs_are_reproducible_and_differ() -> None:
    assert list(sampler(seed=3).epoch(1)) == list(sampler(seed=3).epoch(1))
    assert list(sampler(seed=3).epoch(0)) != list(sampler(seed=3).epoch(1))


def test_docpairs_keep_only_complete_groups_in_file_order() -> None:
    # tests/data/tiny/docpairs.tsv: q1, q2 and q4 have 3 pairs each, q3 only 2 -> q3 is dropped with group_size 3.
    docpairs = DocpairTriples("tiny/train", group_size=3, seed=0)
    corpus = irds.corpus("tiny/train")
    text_to_id = dict(zip(corpus.texts, corpus.ids))
    queries = {text: qid for qid, text in irds.queries("tiny/train").items()}
    seen = sorted((queries[t.query], text_to_id[t.positive], text_to_id[t.negatives[0]]) for t in docpairs.epoch(0))
    assert len(docpairs) == 9 and {q for q, _, _ in seen} == {"q1", "q2", "q4"}
    assert ("q2", "climate1", "exercise0") in seen


def test_docpairs_group_size_and_query_cap() -> None:
    assert len(DocpairTriples("tiny/train", group_size=2)) == 8  # q1..q4: first two pairs each
    assert len(DocpairTriples("tiny/train", group_size=2, max_queries=2)) == 4


def test_negatives_can_come_from_a_stored_run(tmp_path: Path) -> None:
    # A stored run ranks exercise4, then vaccine0, for every query. vaccine0 is judged relevant to q1, so q1 only
    # ever draws exercise4; the others draw from both.
    queries = irds.queries("tiny/train")
    (tmp_path / "run.trec").write_text(
        "".join(f"{q} Q0 exercise4 1 2.0 dense\n{q} Q0 vaccine0 2 1.0 dense\n" for q in queries)
    )
    samples = MinedTriples("tiny/train", RunFile(str(tmp_path / "run.trec")), negatives=1, depth=2)
    corpus = irds.corpus("tiny/train")
    text_to_id = dict(zip(corpus.texts, corpus.ids))
    drawn = {(t.query, text_to_id[t.negatives[0]]) for t in samples.epoch(0)}
    assert (queries["q1"], "exercise4") in drawn and (queries["q1"], "vaccine0") not in drawn
    assert {d for _, d in drawn} <= {"exercise4", "vaccine0"}


def test_a_missing_run_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist: give the path of a run file"):
        len(MinedTriples("tiny/train", RunFile(str(tmp_path / "nope.trec"))))
