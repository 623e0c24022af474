"""Stop signals during training: recorded, not acted on, until the step boundary; then handed to their handler.
Outside training, SIGTERM ends the run as KILLED instead of leaving it RUNNING."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from retrieval_exp.tracking.lifecycle import RUN_ID_FILE
from retrieval_exp.training.preemption import DeferredStop, Preempted, Terminated, terminate_raises
from tests.conftest import REPO, launch_command
from tests.test_launch import runs


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2])
def test_a_stop_signal_waits_for_the_step_boundary_then_reaches_its_handler(signum: int) -> None:
    delivered: list[int] = []
    previous = signal.signal(signum, lambda received, frame: delivered.append(received))  # as submitit's handler
    try:
        with DeferredStop() as stop:
            os.kill(os.getpid(), signum)
            assert stop.signum == signum and delivered == []  # training goes on to the end of its step
        with pytest.raises(SystemExit) as exited:
            Preempted(signum, step=7).hand_over()
        assert delivered == [signum] and exited.value.code == 128 + signum
    finally:
        signal.signal(signum, previous)


def test_the_message_names_the_signal_and_the_step() -> None:
    assert str(Preempted(signal.SIGUSR2, 12)) == "SIGUSR2 at step 12; the checkpoint resumes it"


def test_sigterm_outside_training_raises_where_python_would_die_and_spares_other_handlers() -> None:
    with pytest.raises(Terminated), terminate_raises():
        os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    delivered: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda received, frame: delivered.append(received))  # as submitit's
    try:
        with terminate_raises():
            os.kill(os.getpid(), signal.SIGTERM)
        assert delivered == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_run_terminated_while_it_evaluates_is_killed_in_mlflow_with_no_metrics(tmp_path: Path) -> None:
    process = subprocess.Popen(launch_command(tmp_path, "train=false"), cwd=REPO, stderr=subprocess.PIPE, text=True)
    id_file = tmp_path / "run" / RUN_ID_FILE
    while not id_file.is_file() and process.poll() is None:  # the MLflow run exists: model loading, evaluation
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "stopped: SIGTERM outside training" in stderr
    (run,) = runs(tmp_path)
    assert run.info.status == "KILLED" and run.data.tags["error"].startswith("Terminated")
    assert not (tmp_path / "run" / "metrics.json").exists()
