"""Denoised hard negatives (data/negatives.py): the rank window, the score ceiling relative to the positive with the
miner's scores and with a rescorer, and what was kept and dropped, on a stored run whose scores are known; for mined
triples and for the negatives of Rank-DistiLLM stage 1's ranked lists."""

from pathlib import Path

import pytest

from retrieval_exp.data import irds
from retrieval_exp.data.local import register_all
from retrieval_exp.data.ranked_lists import RankedLists
from retrieval_exp.data.triples import MinedTriples
from retrieval_exp.errors import UserError
from retrieval_exp.retrieval.run import RunFile
from tests.conftest import compose_config

# Every query: exercise4 3.0, exercise3 2.5, exercise1 1.0, protein1 0.5 (none judged relevant to any query);
# q1 also ranks its positive vaccine0 at 2.8, second.
RANKING = [("exercise4", 3.0), ("exercise3", 2.5), ("exercise1", 1.0), ("protein1", 0.5)]


@pytest.fixture(scope="module")
def miner(tmp_path_factory: pytest.TempPathFactory) -> RunFile:
    register_all(compose_config("data=tiny").data.register)
    path = tmp_path_factory.mktemp("run") / "run.trec"
    lines = []
    for query_id in irds.queries("tiny/train"):
        ranking = sorted(RANKING + [("vaccine0", 2.8)] * (query_id == "q1"), key=lambda pair: -pair[1])
        lines += [f"{query_id} Q0 {doc} {rank} {score} stored\n" for rank, (doc, score) in enumerate(ranking, 1)]
    path.write_text("".join(lines))
    return RunFile(str(path))


def pools(samples: MinedTriples) -> dict[tuple[str, str], list[str]]:
    samples.prepare()
    return {(q, positive): candidates for q, positive, candidates in samples._examples}


class FixedScores:
    """A rescorer with given scores (1.0 for q1's positive, 0.99 for exercise3: nearly as high)."""

    def score_pairs(self, queries: dict, documents: dict, pairs: list, batch_size: int) -> list[float]:
        table = {"vaccine0": 1.0, "exercise3": 0.99, "exercise4": 0.3, "exercise1": 0.2, "protein1": 0.1}
        return [table.get(d, 0.5) for _, d in pairs]


def test_the_window_keeps_ranks_a_to_b_then_leaves_out_the_relevant(miner: RunFile) -> None:
    samples = MinedTriples("tiny/train", miner, negatives=1, depth=5, negatives_from=[2, 3])
    found = pools(samples)
    assert found["q1", "vaccine0"] == ["exercise3"]  # ranks 2-3: vaccine0 (relevant), exercise3
    assert found["q2", "climate1"] == ["exercise3", "exercise1"]
    assert samples.report["negatives/candidates"] == 1 + 2 * 13 and samples.report["negatives/topped_up"] == 0


def test_the_ceiling_drops_candidates_scored_nearly_as_high_as_the_positive(miner: RunFile) -> None:
    samples = MinedTriples("tiny/train", miner, negatives=1, depth=5, max_relative_score=0.95)
    found = pools(samples)
    assert found["q1", "vaccine0"] == ["exercise3", "exercise1", "protein1"]  # 3.0 >= 0.95 * 2.8: dropped
    assert found["q2", "climate1"] == ["exercise4", "exercise3", "exercise1", "protein1"]  # its positive: unscored
    report = samples.report
    assert (report["negatives/dropped_by_ceiling"], report["negatives/unscored_positives"]) == (1, 13)
    assert report["negatives/kept"] == report["negatives/candidates"] - 1


def test_a_rescorer_decides_the_ceiling(miner: RunFile) -> None:
    samples = MinedTriples("tiny/train", miner, 1, 5, max_relative_score=0.95, rescorer=FixedScores())
    found = pools(samples)
    assert found["q1", "vaccine0"] == ["exercise4", "exercise1", "protein1"]  # 0.99 >= 0.95 * 1.0
    assert found["q2", "climate1"] == ["exercise4", "exercise1", "protein1"]  # its positive 0.5: 0.99 dropped
    assert samples.report["negatives/unscored_positives"] == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"negatives_from": [3, 2]}, "is not a rank window [a, b] with 1 <= a <= b <= data.train.depth=5"),
        ({"negatives_from": [1, 9]}, "data.train.depth=5"),
        ({"max_relative_score": 1.5}, "data.train.max_relative_score=1.5 is not in (0, 1]"),
        ({"rescorer": FixedScores()}, "set data.train.max_relative_score"),
    ],
)
def test_bad_filters_are_one_line(miner: RunFile, options: dict, message: str) -> None:
    with pytest.raises(UserError) as raised:
        MinedTriples("tiny/train", miner, depth=5, **options)
    assert message in str(raised.value)


def test_a_bad_window_is_one_line_at_start_up(tmp_path: Path) -> None:
    from tests.conftest import launch

    done = launch(tmp_path, "data.train.negatives_from=[5,2]")
    assert done.returncode == 2 and "is not a rank window [a, b]" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "mlflow.db").exists()  # said before any run is recorded


def test_a_run_logs_what_the_filters_kept(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from tests.conftest import launch
    from tests.test_launch import runs

    filters = ["data.train.negatives_from=[2,5]", "data.train.max_relative_score=0.9"]
    done = launch(tmp_path, "trainer.max_steps=1", *filters)
    assert done.returncode == 0, done.stderr[-3000:]
    [run] = runs(tmp_path)
    metrics = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(run.info.run_id).data.metrics
    assert metrics["negatives/window_first"] == 2 and metrics["negatives/kept"] <= metrics["negatives/candidates"]
    assert run.data.params["data.train.max_relative_score"] == "0.9"


def drawn_negatives(samples: RankedLists, epochs: int = 8) -> dict[str, set[str]]:
    """query id -> every non-relevant document single_relevant drew for it over `epochs` epochs."""
    samples.prepare()
    doc_ids = {text: d for d, text in samples.texts.items()}
    query_ids = {text: q for q, text in samples.queries.items()}
    found: dict[str, set[str]] = {}
    for epoch in range(epochs):
        for ranked_list in samples.epoch(epoch):
            found.setdefault(query_ids[ranked_list.query], set()).update(doc_ids[t] for t in ranked_list.documents[1:])
    return found


def stage_one_lists(miner: RunFile, sample_size: int = 2, **filters: object) -> RankedLists:
    return RankedLists("tiny/train", miner, 5, sample_size, "single_relevant", add_docs_not_in_ranking=True, **filters)


def test_ranked_lists_draw_their_negatives_from_the_window_only(miner: RunFile) -> None:
    found = drawn_negatives(stage_one_lists(miner, negatives_from=[2, 3]))
    assert found["q1"] == {"exercise3"}  # ranks 2-3: vaccine0 (its positive), exercise3
    assert found["q2"] <= {"exercise3", "exercise1"} and found["q2"]


def test_ranked_lists_drop_what_scores_nearly_as_high_as_the_drawn_positive(miner: RunFile) -> None:
    samples = stage_one_lists(miner, max_relative_score=0.95)
    found = drawn_negatives(samples, epochs=30)
    assert found["q1"] == {"exercise3", "exercise1", "protein1"}  # exercise4: 3.0 >= 0.95 * 2.8
    assert found["q2"] == {"exercise4", "exercise3", "exercise1", "protein1"}  # climate1 unranked: unscored
    assert samples.report["negatives/dropped_by_ceiling"] == 1


def test_a_list_the_filters_leave_too_short_is_dropped_and_counted(miner: RunFile) -> None:
    samples = stage_one_lists(miner, sample_size=3, negatives_from=[2, 3])  # q1 keeps 1 negative, needs 2
    found = drawn_negatives(samples, epochs=1)
    assert "q1" not in found and len(found) == 11
    assert samples.report["data/queries_dropped"] == 1


def test_unfiltered_lists_draw_from_the_whole_depth(miner: RunFile) -> None:
    found = drawn_negatives(stage_one_lists(miner), epochs=30)
    assert found["q1"] == {"exercise4", "exercise3", "exercise1", "protein1"}


@pytest.mark.parametrize("strategy", ["top", "random"])
def test_filters_on_a_teacher_list_are_one_line(miner: RunFile, strategy: str) -> None:
    with pytest.raises(UserError) as raised:
        RankedLists("tiny/train", miner, 4, 3, strategy, targets="rank", negatives_from=[2, 3])
    assert str(raised.value) == (
        f"data.train.negatives_from filters the negatives that sampling_strategy=single_relevant draws; {strategy} "
        "keeps the first stage's list as it is: remove it"
    )
