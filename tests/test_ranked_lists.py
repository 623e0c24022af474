"""Ranked lists from a run (Method 2's data): each sampling strategy returns what it promises, from TREC and
parquet runs alike, deterministically under a seed."""

from pathlib import Path

import pandas as pd
import pytest

from retrieval_exp.data import irds
from retrieval_exp.data.local import register_all
from retrieval_exp.data.ranked_lists import RankedLists
from retrieval_exp.errors import UserError
from retrieval_exp.retrieval.run import RunFile, read_trec
from tests.conftest import TINY_DATA, compose_config

TEACHER = TINY_DATA / "runs" / "train_teacher.run"  # 10 documents for each of q1..q12; q3's protein4 left out


@pytest.fixture(autouse=True, scope="module")
def tiny_registered() -> None:
    register_all(compose_config("data=tiny").data.register)


def lists(**options: object) -> RankedLists:
    settings = {"depth": 10, "sample_size": 4, "sampling_strategy": "top", "targets": "rank", "seed": 0} | options
    return RankedLists("tiny/train", RunFile(str(TEACHER)), **settings)


def by_query(samples: RankedLists, epoch: int = 0) -> dict[str, tuple[tuple[str, ...], tuple[float, ...]]]:
    """query id -> (doc ids, targets) of one epoch, doc ids read back from their texts."""
    samples.prepare()
    doc_ids = {text: d for d, text in samples.texts.items()}
    query_ids = {text: q for q, text in samples.queries.items()}
    return {
        query_ids[ranked.query]: (tuple(doc_ids[text] for text in ranked.documents), ranked.targets)
        for ranked in samples.epoch(epoch)
    }


def teacher_order() -> dict[str, list[str]]:
    run = read_trec(TEACHER)
    return {q: sorted(docs, key=lambda d: -docs[d]) for q, docs in run.items()}


def test_top_takes_the_best_ranked_with_depth_minus_rank_plus_one_targets() -> None:
    drawn = by_query(lists(sample_size=4, depth=10))
    order = teacher_order()
    assert len(drawn) == 12
    for query_id, (docs, targets) in drawn.items():
        assert list(docs) == order[query_id][:4]
        assert targets == (10.0, 9.0, 8.0, 7.0)


def test_random_draws_distinct_candidates_in_rank_order_from_the_top_depth() -> None:
    order = teacher_order()
    for query_id, (docs, targets) in by_query(lists(sampling_strategy="random", sample_size=3, depth=6)).items():
        positions = [order[query_id].index(d) for d in docs]
        assert len(set(docs)) == 3 and positions == sorted(positions) and max(positions) < 6
        assert targets == tuple(6.0 - p for p in positions)


def test_single_relevant_gives_one_relevant_and_non_relevant_rest() -> None:
    qrels = irds.qrels("tiny/train")
    order = teacher_order()
    for query_id, (docs, targets) in by_query(lists(sampling_strategy="single_relevant", targets="relevance")).items():
        assert len(docs) == 4 and targets == (1.0, 0.0, 0.0, 0.0)
        assert qrels[query_id].get(docs[0], 0) >= 1
        assert all(qrels[query_id].get(d, 0) == 0 and d in order[query_id] for d in docs[1:])


def test_add_docs_not_in_ranking_lets_the_missed_relevant_document_be_drawn() -> None:
    def positives(samples: RankedLists) -> set[str]:
        return {by_query(samples, epoch)["q3"][0][0] for epoch in range(20)}

    assert positives(lists(sampling_strategy="single_relevant", targets="relevance")) == {"protein0"}
    added = lists(sampling_strategy="single_relevant", targets="relevance", add_docs_not_in_ranking=True)
    assert positives(added) == {"protein0", "protein4"}


def test_the_same_seed_and_epoch_draw_the_same_lists() -> None:
    options = {"sampling_strategy": "single_relevant", "targets": "relevance"}
    assert by_query(lists(**options), 3) == by_query(lists(**options), 3)
    assert [r.query for r in lists(**options).epoch(3)] == [r.query for r in lists(**options).epoch(3)]
    assert by_query(lists(**options), 3) != by_query(lists(**options), 4)
    assert by_query(lists(**options, seed=1), 3) != by_query(lists(**options), 3)


def test_score_targets_are_the_runs_scores() -> None:
    run = read_trec(TEACHER)
    for query_id, (docs, targets) in by_query(lists(targets="score")).items():
        assert targets == tuple(run[query_id][d] for d in docs)


def test_a_parquet_run_gives_the_same_lists_as_its_trec_file(tmp_path: Path) -> None:
    rows = [line.split("\t") for line in TEACHER.read_text().splitlines()]
    table = pd.DataFrame({"query-id": [r[0] for r in rows], "corpus-id": [r[2] for r in rows]})
    table["score"] = [float(r[4]) for r in rows]
    table.sample(frac=1, random_state=0).to_parquet(tmp_path / "teacher.parquet")  # row order must not matter
    parquet = RankedLists("tiny/train", RunFile(str(tmp_path / "teacher.parquet")), depth=10, sample_size=4, seed=0)
    assert by_query(parquet) == by_query(lists(sampling_strategy="single_relevant", targets="relevance"))


def test_queries_that_cannot_fill_a_list_are_dropped_and_counted() -> None:
    samples = lists(sampling_strategy="single_relevant", targets="relevance", sample_size=10)  # 9 non-relevant needed
    assert len(samples) == 11  # q5 ranks both its relevant documents in its top 10: only 8 non-relevant
    assert "q5" not in by_query(samples)
    assert {k: v for k, v in samples.report.items() if k.startswith("data/")} == {
        "data/lists": 11,
        "data/queries_dropped": 1,
    }
    assert samples.report["negatives/window_last"] == 10 and samples.report["negatives/dropped_by_ceiling"] == 0
    with pytest.raises(UserError, match="no judged query of tiny/train has enough candidates for sample_size=11"):
        len(lists(sampling_strategy="single_relevant", sample_size=11, depth=20))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sampling_strategy": "log_random"}, "sampling_strategy='log_random' is not one of single_relevant"),
        ({"targets": "order"}, "targets='order' is not one of relevance, rank, score"),
        ({"sample_size": 20, "depth": 10}, "sample_size=20 must be at least 2 and, for top, at most depth=10"),
    ],
)
def test_bad_settings_fail_with_one_line(options: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        lists(**options)


def test_a_run_over_another_collection_is_refused(tmp_path: Path) -> None:
    (tmp_path / "other.run").write_text("q1 Q0 not-a-tiny-doc 1 3.0 x\nq1 Q0 vaccine0 2 2.0 x\nq1 Q0 sleep1 3 1.0 x\n")
    with pytest.raises(UserError, match="ranks 1 documents that tiny/train does not have"):
        len(RankedLists("tiny/train", RunFile(str(tmp_path / "other.run")), depth=3, sample_size=2))
