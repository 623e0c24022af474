"""A run killed without a signal (kill -9, OOM, a lost node) resumes from its last periodic checkpoint in the same
MLflow run, and its loss curve keeps one value per step although the steps after the checkpoint were logged twice."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from retrieval_exp.study import find_runs
from tests.conftest import REPO, launch, launch_command
from tests.test_launch import runs

STEPS = ("trainer.max_steps=30", "trainer.checkpoint_every=2", "trainer.log_every=1")


def logged_steps(workdir: Path) -> list[int]:
    """The steps of train/loss logged so far into `workdir`'s store by a run in progress."""
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    experiment = client.get_experiment_by_name("tiny") if (workdir / "mlflow.db").is_file() else None
    found = client.search_runs([experiment.experiment_id]) if experiment else []
    return [m.step for run in found for m in client.get_metric_history(run.info.run_id, "train/loss")]


def crash(workdir: Path, *overrides: str, after_step: int) -> None:
    """Launch, and kill -9 once a step after `after_step` has been logged."""
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    crashing = subprocess.Popen(launch_command(workdir, *overrides), cwd=REPO, **quiet)
    while crashing.poll() is None and not any(step > after_step for step in logged_steps(workdir)):
        time.sleep(0.01)
    crashing.send_signal(signal.SIGKILL)
    assert crashing.wait() == -signal.SIGKILL


def test_a_run_killed_without_a_signal_resumes_in_its_mlflow_run_with_one_loss_per_step(tmp_path: Path) -> None:
    crash(tmp_path, *STEPS, after_step=2)  # past the first checkpoint: what follows it is logged, then lost
    [crashed] = runs(tmp_path)
    assert crashed.info.status == "RUNNING"  # nothing could mark it

    done = launch(tmp_path, *STEPS)
    assert done.returncode == 0, done.stderr[-3000:]
    [run] = runs(tmp_path)
    assert (run.info.run_id, run.info.status) == (crashed.info.run_id, "FINISHED")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    [resumed] = client.get_metric_history(run.info.run_id, "train/resumed_from")
    assert resumed.step == resumed.value and resumed.value % 2 == 0 and 2 <= resumed.value < 30
    assert len(logged_steps(tmp_path)) > 30  # the steps between the checkpoint and the kill, logged again on resuming
    [exported] = find_runs(client, "tiny", tmp_path / "export", {})
    assert [step for step, _ in exported.loss_curve] == list(range(1, 31))


def test_a_run_killed_before_its_first_checkpoint_is_closed_and_started_over(tmp_path: Path) -> None:
    crash(tmp_path, "trainer.max_steps=30", "trainer.checkpoint_every=100", "trainer.log_every=1", after_step=0)
    done = launch(tmp_path, "trainer.max_steps=30", "trainer.checkpoint_every=100", "trainer.log_every=1")
    assert done.returncode == 0, done.stderr[-3000:]
    abandoned, again = runs(tmp_path)
    assert (abandoned.info.status, again.info.status) == ("KILLED", "FINISHED")
    error = f"ended without a signal before its first checkpoint; run {again.info.run_id} starts over"
    assert abandoned.data.tags["error"] == error
