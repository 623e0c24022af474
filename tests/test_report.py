"""The study report read from a real MLflow store made in the test: runs with hand-built per-query values whose
comparisons have known answers."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from retrieval_exp.significance import holm
from retrieval_exp.tracking.mlflow_run import TrackedRun, open_experiment
from tests.conftest import REPO

QUERIES = [f"q{i}" for i in range(40)]
BASE = np.random.default_rng(0).uniform(0.2, 0.7, len(QUERIES))


def open_study(workdir: Path) -> tuple[MlflowClient, str]:
    return open_experiment(f"sqlite:///{workdir}/mlflow.db", str(workdir / "artifacts"), "study")


def log_run(workdir: Path, name: str, values: np.ndarray, overrides: str, loss: list[float], parent: str) -> str:
    client, experiment_id = open_study(workdir)
    tags = {"method": name, "overrides": overrides, "sweep_id": "s1", "mlflow.parentRunId": parent}
    run = TrackedRun.start(client, experiment_id, f"{name} · tiny", tags, {})
    folder = workdir / name
    folder.mkdir()
    rows = [f"{q}\tnDCG@10\t{v:.6f}\n{q}\tRR@10\t{v:.6f}\n" for q, v in zip(QUERIES, values)]
    (folder / "perquery.tsv").write_text("query_id\tmeasure\tvalue\n" + "".join(rows))
    (folder / "run.trec").write_text(f"q0 Q0 d1 1 1.0 {name}\n")
    run.log_metrics({"nDCG@10": values.mean(), "RR@10": values.mean(), "time/train_s": 12.0, "train/steps": 3})
    for step, value in enumerate(loss, start=1):
        run.log_metrics({"train/loss": value}, step)
    run.log_artifacts([folder / "perquery.tsv", folder / "run.trec"])
    run.finish("FINISHED")
    return run.run_id


@pytest.fixture
def store(tmp_path: Path) -> Path:
    client, experiment_id = open_study(tmp_path)
    parent = client.create_run(experiment_id, run_name="sweep s1", tags={"sweep_id": "s1", "sweep_parent": "true"})
    parent_id = parent.info.run_id
    log_run(tmp_path, "baseline", BASE, "loss=infonce seed=1", [0.9, 0.5], parent_id)
    log_run(tmp_path, "same", BASE.copy(), "loss=same seed=1", [0.8, 0.6], parent_id)
    log_run(tmp_path, "better", BASE + 0.05, "loss=better seed=1", [0.7, 0.4], parent_id)
    noise = np.random.default_rng(1).normal(0, 0.05, len(QUERIES))
    log_run(tmp_path, "noisy", np.clip(BASE + noise, 0, 1), "loss=noisy seed=1", [], parent_id)
    client.set_terminated(parent_id)
    return tmp_path


def report(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "retrieval_exp.report", *args, "--tracking-uri", f"sqlite:///{workdir}/mlflow.db"]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_report_marks_what_differs_and_not_what_does_not(store: Path) -> None:
    out = store / "out"
    done = report(store, "study", "--baseline", "baseline", "--out", str(out), "--measures", "nDCG@10", "RR@10")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {row["name"].split(" · ")[0]: row for row in csv.DictReader((store / "out" / "report.csv").open())}
    assert rows["same"]["nDCG@10 p_t"] == "1.0" and rows["same"]["nDCG@10 d"] == "0.0"
    assert float(rows["better"]["nDCG@10 p_t_holm"]) < 1e-6 and float(rows["better"]["nDCG@10 ci_low"]) > 0
    assert float(rows["better"]["nDCG@10 diff"]) == pytest.approx(0.05, abs=1e-5)
    raw = [float(rows[name]["nDCG@10 p_t"]) for name in ("same", "better", "noisy")]
    holm_values = [float(rows[name]["nDCG@10 p_t_holm"]) for name in ("same", "better", "noisy")]
    assert holm_values == pytest.approx(holm(raw))
    table = (store / "out" / "report.md").read_text()
    better_line = next(line for line in table.splitlines() if "loss=better" in line)
    same_line = next(line for line in table.splitlines() if "loss=same" in line)
    assert "†" in better_line and "†" not in same_line and "seed=1" not in table.split("\n\n")[0]  # shared: not swept
    assert {p.name for p in out.iterdir()} >= {"report.md", "report.csv", "nDCG_at_10.png", "train_loss.png"}
    assert len(list((store / "out" / "runs").glob("*.trec"))) == 4


def test_report_of_a_sweep_goes_to_its_parent_run(store: Path) -> None:
    done = report(store, "s1", "--out", str(store / "out"), "--measures", "nDCG@10", "--to-parent")
    assert done.returncode == 0 and "Baseline: run 0" in done.stdout  # the first run, when none is named
    assert done.stdout.count("| loss=") == 4  # the parent is not a row
    client, experiment_id = open_study(store)
    [parent] = client.search_runs([experiment_id], "tags.sweep_parent = 'true'")
    logged = {artifact.path for artifact in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/report.csv"} <= logged


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nothing-here"], "no finished runs in experiment or sweep 'nothing-here'"),
        (["study", "--baseline", "missing", "--measures", "RR@10"], "--baseline 'missing' matches 0 runs"),
        (["study"], "measure 'R@100' is not in every run's perquery.tsv"),  # R@100 is not logged per query
    ],
)
def test_bad_input_is_one_line(store: Path, args: list[str], message: str) -> None:
    done = report(store, *args, "--out", str(store / "out"))
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
