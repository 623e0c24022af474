"""Validation during training: held-out splits of the training queries, validation that ranks as evaluation does,
the val/* results of a run, and runs that read no test collection (evaluate=false)."""

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient

from retrieval_exp.benchmark import Collection, evaluate_collection
from retrieval_exp.data import held_out, irds
from retrieval_exp.data.local import register_all
from retrieval_exp.experiment import check
from retrieval_exp.hardware import Hardware
from retrieval_exp.training.validation import RetrievalValidation
from tests.conftest import TINY, compose_config, run_recipe


def test_a_held_out_split_is_a_seeded_share_of_the_judged_queries_kept_out_of_training() -> None:
    register_all(compose_config(*TINY).data.register)
    fit, val = held_out.split_ids("tiny/train", 0.25, seed=3)
    assert (fit, val) == ("tiny/train/held-out-25pct-seed3/fit", "tiny/train/held-out-25pct-seed3/val")
    every, judged = irds.queries("tiny/train"), irds.qrels("tiny/train")
    kept, drawn = irds.queries(fit), irds.queries(val)
    assert not kept.keys() & drawn.keys() and kept.keys() | drawn.keys() == every.keys()
    assert len(drawn) == round(len(judged) * 0.25) and drawn.keys() <= judged.keys()
    assert irds.qrels(val) == {q: judged[q] for q in drawn} and irds.qrels(fit).keys() == judged.keys() - drawn.keys()
    assert irds.corpus(val).ids == irds.corpus("tiny/train").ids  # the same documents
    other_fit, other_val = held_out.split_ids("tiny/train", 0.25, seed=4)
    assert irds.queries(other_val).keys() != drawn.keys()  # the seed decides
    assert irds.queries(held_out.split_ids("tiny/train", 0.25, seed=3)[1]).keys() == drawn.keys()


def test_validation_without_a_dev_split_holds_training_queries_out(tmp_path: Path) -> None:
    cfg = compose_config(*TINY, "validation=dev", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db")
    check(cfg)
    assert cfg.validation.dataset == "tiny/train/held-out-10pct-seed0/val"
    assert cfg.data.train.dataset == "tiny/train/held-out-10pct-seed0/fit"
    training = instantiate(cfg.data.train)
    assert not {example.query_id for example in training.epoch(0)} & irds.queries(cfg.validation.dataset).keys()


RE_RANKER = ("model=tiny_cross", "data=tiny_lists", "loss=listwise_infonce", "retriever=rerank")


@pytest.mark.parametrize("kind", [(), RE_RANKER], ids=["bi-encoder: full retrieval", "cross-encoder: re-ranking"])
def test_validation_ranks_as_evaluation_does(tmp_path: Path, kind: tuple[str, ...]) -> None:
    """The validator's measures of a split equal the recipe's evaluation of the same split as a test collection."""
    cfg = compose_config(*TINY, *kind, f"tracking.uri=sqlite:///{tmp_path}/mlflow.db")
    plan, _ = check(cfg)
    model, hardware = instantiate(cfg.model), Hardware()
    validator = RetrievalValidation("tiny/test", measures=list(cfg.eval.measures), build_retriever=plan.build_retriever)
    retriever = plan.build_retriever(encoder=model, hardware=hardware)
    evaluation, _, _ = evaluate_collection(Collection("tiny", "tiny/test"), retriever, cfg.eval, tmp_path, "x")
    ranked = {name: value for name, value in evaluation.metrics.items() if not name.startswith("first_stage/")}
    assert validator.score(model, hardware) == pytest.approx(ranked)  # a re-ranker's first stage is not validated


@pytest.mark.parametrize("kind", [(), RE_RANKER], ids=["bi-encoder", "cross-encoder"])
def test_a_tuning_trial_validates_and_reads_no_test_collection(tmp_path: Path, kind: tuple[str, ...]) -> None:
    overrides = ("validation=dev", "validation.every=2", "evaluate=false", "objective=val/nDCG@10")
    metrics = run_recipe(tmp_path, *kind, "trainer.max_steps=4", "validation.held_out=0.25", *overrides)
    out = tmp_path / "run"
    assert set(metrics) == {"val/nDCG@10", "val/R@100", "val/RR@10"}
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert not (out / "run.trec").exists() and not (out / "perquery.tsv").exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    history = client.get_metric_history(run.info.run_id, "val/nDCG_at_10")
    assert [point.step for point in history] == [2, 4]
    assert metrics["val/nDCG@10"] == max(point.value for point in history) == run.data.metrics["val/best_nDCG_at_10"]
    assert run.data.params["validation.dataset"] == "tiny/train/held-out-25pct-seed0/val"
    assert "nDCG_at_10" not in run.data.metrics
