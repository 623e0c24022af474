"""Measures on hand-made runs, identical-id removal, and the files a run leaves."""

import json
import math
from pathlib import Path

import pytest

from retrieval_exp.errors import UserError
from retrieval_exp.measures import cut, evaluate, parse_measures, write_outputs
from retrieval_exp.retrieval.run import read_trec

QRELS = {"q1": {"d1": 1}, "q2": {"d3": 1, "d4": 1}}
RUN = {"q1": {"d2": 2.0, "d1": 1.0}, "q2": {"d3": 3.0, "d9": 2.0, "d4": 1.0}}


def test_measures_match_hand_computation() -> None:
    result = evaluate(RUN, QRELS, ["nDCG@10", "RR@10", "R@100"])
    ndcg_q1 = 1 / math.log2(3)
    ndcg_q2 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert result.metrics["nDCG@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 2)
    assert result.metrics["RR@10"] == pytest.approx((0.5 + 1.0) / 2)
    assert result.metrics["R@100"] == pytest.approx(1.0)
    assert ("q1", "RR@10", 0.5) in result.per_query


def test_cut_drops_the_query_itself_before_truncating() -> None:
    run = {"q1": {"q1": 9.0, "a": 3.0, "b": 2.0, "c": 1.0}}
    assert cut(run, 2, ignore_identical_ids=True) == {"q1": {"a": 3.0, "b": 2.0}}
    assert cut(run, 2, ignore_identical_ids=False) == {"q1": {"q1": 9.0, "a": 3.0}}


def test_unknown_measure_is_one_clear_line() -> None:
    with pytest.raises(UserError, match="'nDCG@ten'"):
        parse_measures(["nDCG@ten"])


def test_outputs_round_trip(tmp_path: Path) -> None:
    result = evaluate(RUN, QRELS, ["nDCG@10"])
    write_outputs(result, tmp_path, tag="test")
    assert json.loads((tmp_path / "metrics.json").read_text()) == result.metrics
    assert read_trec(tmp_path / "run.trec") == RUN
    first = (tmp_path / "run.trec").read_text().splitlines()[0].split()
    assert first == ["q1", "Q0", "d2", "1", "2.000000", "test"]
    assert (tmp_path / "perquery.tsv").read_text().splitlines()[0] == "query_id\tmeasure\tvalue"
    assert not list(tmp_path.glob("*.partial"))
