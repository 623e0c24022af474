"""The recipe on the tiny model and collection: the run contract and the MLflow records (in-process, run_recipe),
and launch.py as a user runs it where the process is the point: sweeps, exit codes, bad input, reruns."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import launch, run_recipe

CONTRACT = ("config.yaml", "metrics.json", "run.trec", "perquery.tsv")


def runs(workdir: Path) -> list:  # noqa: ANN201
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    experiment = client.get_experiment_by_name("tiny")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def test_default_experiment_keeps_the_run_contract(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_recipe(tmp_path, "trainer.max_steps=3", "trainer.checkpoint_every=2", "tracking.system_metrics_every=3600")
    out = tmp_path / "run"
    assert all((out / name).is_file() for name in CONTRACT)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"nDCG@10", "R@100", "RR@10"} <= metrics.keys() and 0 < metrics["nDCG@10"] <= 1
    lines = [line.split() for line in (out / "run.trec").read_text().splitlines()]
    assert {line[0] for line in lines} == {"t1", "t2", "t3", "t4", "t5", "t6"}
    assert all(len(line) == 6 and line[1] == "Q0" and line[5] == "infonce" for line in lines)
    assert len(lines) == 6 * 30  # every document of the tiny corpus, for each test query
    assert "${" not in (out / "config.yaml").read_text()
    assert (out / "model" / "config.json").is_file() and not (out / "checkpoints").exists()
    assert "infonce on tiny/test: " in capsys.readouterr().out

    [run] = runs(tmp_path)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["nDCG_at_10"] == pytest.approx(metrics["nDCG@10"])
    assert run.data.metrics["train/steps"] == 3
    assert "system/cpu_utilization_percentage" in run.data.metrics  # a run shorter than one interval keeps its sample
    assert run.data.params["model.pooling"] == "mean" and run.data.params["trainer.max_steps"] == "3"
    assert run.data.tags["method"] == "infonce" and run.data.tags["dataset"] == "tiny/test"
    assert run.data.tags["git_commit"] and "sweep_id" not in run.data.tags
    artifacts = {a.path for a in MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").list_artifacts(run.info.run_id)}
    assert set(CONTRACT) <= artifacts


@pytest.mark.parametrize(
    ("sweep", "param", "values"),
    [
        ("optim.lr=1e-5,3e-5", "optim.lr", ["1e-05", "3e-05"]),
        (
            "loss=adaptive_margin,infonce",
            "loss._target_",
            ["retrieval_exp.losses.contrastive.InfoNCE", "retrieval_exp.losses.margin.AdaptiveMargin"],
        ),
    ],
)
def test_sweep_records_one_run_per_value_under_a_parent(
    tmp_path: Path, sweep: str, param: str, values: list[str]
) -> None:
    done = launch(tmp_path, sweep, "trainer.max_steps=2", multirun=True)
    assert done.returncode == 0, done.stderr[-3000:]
    recorded = runs(tmp_path)
    [parent] = [r for r in recorded if r.data.tags.get("sweep_parent") == "true"]
    children = [r for r in recorded if r is not parent]
    sweep_id = parent.data.tags["sweep_id"]
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert sorted(r.data.params[param] for r in children) == values
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["sweep_id"] == sweep_id
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    summary = (tmp_path / "sweep" / "summary.tsv").read_text().splitlines()
    assert summary[0].split("\t")[:3] == ["job", "overrides", "status"] and len(summary) == 3
    assert all("\tfinished\t" in row for row in summary[1:])
    assert all((tmp_path / "sweep" / str(job) / "metrics.json").is_file() for job in (0, 1))


def test_bm25_preset_on_the_tiny_collection(tmp_path: Path) -> None:
    run_recipe(tmp_path, "experiment=bm25")
    [run] = runs(tmp_path)
    assert run.data.tags["method"] == "bm25" and run.data.tags["model"] == "none"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["RR@10"] > 0.5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.test=beir/no-such-dataset/test"], "unknown dataset id"),
        (["data.test=beir/scifact"], "has no qrels"),
        (["loss._target_=tests.fakes.CrossEncoderOnlyLoss"], "trains cross_encoder models"),
        (["trainer.batch_size=-4"], "trainer.batch_size=-4 is out of range: it must be >= 1"),  # once trained silently
        (["trainer.batch_size=0"], "trainer.batch_size=0 is out of range: it must be >= 1"),  # once ZeroDivisionError
        (["optim.lr=abc"], "optim.lr='abc' is not a number"),  # once torch's TypeError at the first step
        (["retriever=rerank_run", "retriever.first_stage.path=gone.run"], "'gone.run' does not exist"),  # once late
        (["tracking.uri=mongo://host/db"], "tracking.uri='mongo://host/db' is not an MLflow store"),
        pytest.param(
            ["hardware=gpu"],
            "no CUDA device is visible: use hardware=cpu",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device"),
        ),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, overrides: list[str], message: str) -> None:
    done = launch(tmp_path, *overrides)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "metrics.json").exists() and not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_model_missing_from_the_offline_cache_is_one_line(tmp_path: Path) -> None:
    done = launch(tmp_path, "experiment=zero_shot", tiny=False, env={"HF_HOME": str(tmp_path / "empty-hf-home")})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "'sentence-transformers/all-MiniLM-L6-v2' is not in the Hugging Face cache" in done.stderr


def test_a_run_that_breaks_is_failed_in_mlflow_and_leaves_no_metrics(tmp_path: Path, tiny_bert: Path) -> None:
    broken = tmp_path / "broken_model"  # complete at start-up, truncated weights when the model is loaded
    shutil.copytree(tiny_bert, broken)
    (broken / "model.safetensors").write_bytes(b"truncated")
    done = launch(tmp_path, f"model.name_or_path={broken}")
    assert done.returncode != 0
    [run] = runs(tmp_path)
    assert run.info.status == "FAILED" and run.data.tags["error"]
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_failing_job_fails_the_sweep_but_not_its_siblings(tmp_path: Path) -> None:
    done = launch(
        tmp_path, "eval.depth=5", "data.test=tiny/test,beir/no-such-dataset/test", "train=false", multirun=True
    )
    assert done.returncode == 1 and "1 of 2 runs failed" in done.stderr
    assert (tmp_path / "sweep" / "0" / "metrics.json").is_file()
    assert not (tmp_path / "sweep" / "1" / "metrics.json").exists()
    [parent] = [r for r in runs(tmp_path) if r.data.tags.get("sweep_parent") == "true"]
    assert parent.info.status == "FAILED"


def test_rerun_in_the_same_directory_resumes_training_and_its_mlflow_run(tmp_path: Path) -> None:
    broken = tmp_path / "broken.run"  # its first 100 lines pass the start-up check; line 101 fails when it is read
    broken.write_text("elsewhere Q0 d1 1 1.0 x\n" * 100 + "this line is not a run line\n")
    steps = ["trainer.max_steps=3", "trainer.checkpoint_every=1"]
    first = launch(tmp_path, *steps, "retriever=rerank_run", f"retriever.first_stage.path={broken}")
    assert first.returncode == 2 and "line 101, is not a TREC run line" in first.stderr  # trained, then failed
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    assert not (tmp_path / "run" / "metrics.json").exists()
    [failed] = runs(tmp_path)
    assert failed.info.status == "FAILED"

    second = launch(tmp_path, *steps)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from step 3 of 3" in second.stderr + second.stdout
    [resumed] = runs(tmp_path)
    assert resumed.info.run_id == failed.info.run_id and resumed.info.status == "FINISHED"
    assert (tmp_path / "run" / "metrics.json").is_file() and not (tmp_path / "run" / "checkpoints").exists()


def test_paper_preset_runs_at_tiny_scale(tmp_path: Path) -> None:
    from tests.test_early_stopping import PAPER_TINY

    # tiny/test is the tiny split with a first stage to re-rank: validated on, so not also tested on
    run_recipe(tmp_path, *PAPER_TINY, "evaluate=false", "optim=adamw", "tracking.experiment=tiny", tiny=False)
    [run] = runs(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    validations = client.get_metric_history(run.info.run_id, "val/nDCG_at_10")
    assert len(validations) == run.data.metrics["train/steps"] >= 1
    assert run.data.metrics["val/best_nDCG_at_10"] == max(m.value for m in validations)
    assert run.data.tags["method"] == "adaptive_margin" and run.data.params["data.train.group_size"] == "3"


def test_teacher_distillation_runs_end_to_end(tmp_path: Path) -> None:
    run_recipe(tmp_path, "loss=margin_mse", "model@teacher=tiny_bert", "trainer.max_steps=2")
    [run] = runs(tmp_path)
    assert run.data.tags["method"] == "margin_mse" and run.data.params["teacher.pooling"] == "mean"


@pytest.mark.parametrize("preset", ["zero_shot", "self_distill/scifact"])
def test_preset_runs_at_tiny_scale(tmp_path: Path, preset: str) -> None:
    run_recipe(tmp_path, f"experiment={preset}", "trainer.max_steps=2", "tracking.experiment=tiny")
    assert (tmp_path / "run" / "metrics.json").is_file()
