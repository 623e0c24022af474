"""Sweeps through a real SLURM controller (the loopback cluster of slurm/start.sh) and the submitit launcher:
finished runs with their job ids and logs, a requeue in the middle of training, a job that raises, prefetching."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, launch, launch_command
from tests.test_launch import runs

pytestmark = pytest.mark.slow  # real collections, SLURM, parallel sweeps: the full tier only

STATE = Path(os.environ.get("RETRIEVAL_EXP_SLURM_STATE", "/tmp/retrieval_exp_slurm"))
ON_SLURM = "hardware=slurm_cpu"  # tests/conf/hardware/slurm_cpu.yaml: a site file for the loopback cluster


@pytest.fixture(scope="module")
def slurm() -> dict[str, str]:
    """SLURM_CONF of a running cluster; CI (RETRIEVAL_EXP_REQUIRE_SLURM=1) fails without one, elsewhere they skip."""
    env = {"SLURM_CONF": os.environ.get("SLURM_CONF", str(STATE / "slurm.conf"))}
    up = shutil.which("sinfo") and Path(env["SLURM_CONF"]).is_file()
    if up:
        up = subprocess.run(["sinfo"], env={**os.environ, **env}, capture_output=True).returncode == 0
    if not up:
        message = "no SLURM cluster is up: start the loopback one with `bash slurm/start.sh`"
        if os.environ.get("RETRIEVAL_EXP_REQUIRE_SLURM"):
            pytest.fail(message)
        pytest.skip(message)
    return env


def slurm_command(env: dict[str, str], *args: str) -> str:
    return subprocess.run(args, env={**os.environ, **env}, capture_output=True, text=True, check=True).stdout


def final_states(env: dict[str, str], array: str, wait_s: float = 60) -> list[str]:
    """The array's `JobID|State` rows once none is still running: a job's result file is written before its
    process exits, so the launcher may finish while the controller still counts the job as RUNNING."""
    deadline = time.monotonic() + wait_s
    while True:
        states = sorted(slurm_command(env, "sacct", "-n", "-X", "-P", "-j", array, "-o", "JobID,State").split())
        if not any(state.endswith(("|RUNNING", "|PENDING", "|COMPLETING")) for state in states):
            return states
        assert time.monotonic() < deadline, f"jobs still running {wait_s:.0f} s after the sweep ended: {states}"
        time.sleep(0.5)


def test_a_detached_sweep_runs_as_a_job_array_and_records_each_job(tmp_path: Path, slurm: dict[str, str]) -> None:
    command = launch_command(tmp_path, ON_SLURM, "optim.lr=1e-5,3e-5", "trainer.max_steps=2", multirun=True)
    env = {**os.environ, **slurm, "RETRIEVAL_EXP_LAUNCHER_LOGS": str(tmp_path / "logs")}
    detached = subprocess.run(["bash", "slurm/detach.sh", *command[2:]], cwd=REPO, env=env, capture_output=True)
    pid, log = re.fullmatch(r"launcher PID (\d+) \(log: (.+)\)\n", detached.stdout.decode()).groups()
    deadline = time.monotonic() + 600
    while Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]:
        assert time.monotonic() < deadline, "the detached launcher did not finish"
        time.sleep(0.5)
    assert "sweep " in Path(log).read_text() and "failed" not in Path(log).read_text()
    children = [run for run in runs(tmp_path) if run.data.tags.get("sweep_parent") != "true"]
    assert len(children) == 2 and all(run.info.status == "FINISHED" for run in children)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    job_ids = set()
    for run in children:
        assert "run.trec" in {a.path for a in client.list_artifacts(run.info.run_id)}
        tags = run.data.tags
        assert re.fullmatch(r"\d+_[01]", tags["slurm.job_id"]) and tags["slurm.restarts"] == "0"
        assert "infonce on tiny/test: " in Path(tags["slurm.log"]).read_text()  # the job's own log
        job_ids.add(tags["slurm.job_id"])
    array = job_ids.pop().split("_")[0]
    assert final_states(slurm, array) == [f"{array}_0|COMPLETED", f"{array}_1|COMPLETED"]


def test_a_job_that_raises_is_failed_with_its_error(tmp_path: Path, slurm: dict[str, str], tiny_bert: Path) -> None:
    broken = tmp_path / "broken_model"  # complete at start-up, truncated weights when the job loads it
    shutil.copytree(tiny_bert, broken)
    (broken / "model.safetensors").write_bytes(b"truncated")
    models = f"model.name_or_path={broken},{tiny_bert}"
    done = launch(tmp_path, ON_SLURM, models, "train=false", multirun=True, env=slurm)
    assert done.returncode == 1 and "1 of 2 runs failed (jobs 0)" in done.stderr
    failed, finished = sorted(runs(tmp_path)[1:], key=lambda run: run.info.status)  # runs(...)[0]: the parent
    assert failed.info.status == "FAILED" and "deserializing" in failed.data.tags["error"]
    assert "Traceback" in Path(failed.data.tags["slurm.log"]).read_text()
    assert finished.info.status == "FINISHED"


def test_a_requeued_job_resumes_at_its_step_and_ends_as_an_uninterrupted_run(
    tmp_path: Path, slurm: dict[str, str]
) -> None:
    steps = ["trainer.max_steps=300", "trainer.checkpoint_every=25", "trainer.log_every=25"]
    steps.append("tracking.system_metrics_every=null")
    queued = tmp_path / "slurm"
    sweep = subprocess.Popen(
        launch_command(queued, ON_SLURM, *steps, multirun=True),
        cwd=REPO,
        env={**os.environ, **slurm},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    checkpoint = queued / "sweep" / "0" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists():
        assert sweep.poll() is None and time.monotonic() < deadline, "the job never wrote its first checkpoint"
        time.sleep(0.1)
    [job] = [path.name for path in (queued / "sweep" / ".submitit").iterdir() if re.fullmatch(r"\d+", path.name)]
    slurm_command(slurm, "scontrol", "requeue", job)  # what preemption does: SIGTERM, then the job is queued again
    while "PENDING" not in slurm_command(slurm, "squeue", "-h", "-j", job, "-o", "%T"):
        time.sleep(0.2)
    slurm_command(slurm, "scontrol", "update", f"jobid={job}", "StartTime=now")  # SLURM delays a requeued job
    output, _ = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, output[-3000:]

    [run] = [run for run in runs(queued) if run.data.tags.get("sweep_parent") != "true"]
    assert run.info.status == "FINISHED" and run.data.tags["slurm.restarts"] == "1"
    stopped = int(re.fullmatch(r"SIGTERM at step (\d+); the checkpoint resumes it", run.data.tags["stopped"])[1])
    assert 25 <= stopped < 300 and run.data.metrics["train/steps"] == 300
    log = Path(run.data.tags["slurm.log"]).read_text()
    assert f"resuming from step {stopped} of 300" in log

    local = tmp_path / "local"  # the same config, uninterrupted, on this machine
    assert launch(local, *steps).returncode == 0
    [reference] = runs(local)
    client = MlflowClient(f"sqlite:///{queued}/mlflow.db")
    reference_client = MlflowClient(f"sqlite:///{local}/mlflow.db")
    for name in ("train/loss", "train/lr"):
        history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)]
        expected = [(m.step, m.value) for m in reference_client.get_metric_history(reference.info.run_id, name)]
        assert [step for step, _ in history] == list(range(25, 301, 25))  # no step lost or logged twice
        assert [value for _, value in history] == pytest.approx([value for _, value in expected], rel=1e-5)
    for name in ("nDCG_at_10", "R_at_100", "RR_at_10"):
        assert run.data.metrics[name] == pytest.approx(reference.data.metrics[name], abs=1e-6)


def test_prefetch_fetches_on_the_submitting_side_and_jobs_run_offline(tmp_path: Path, slurm: dict[str, str]) -> None:
    done = launch(tmp_path, ON_SLURM, "+prefetch=true", "train=false", "seed=1,2", multirun=True, env=slurm)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "prefetched for 2 jobs: models [], datasets ['tiny/test', 'tiny/train']" in done.stderr
    scripts = list((tmp_path / "sweep" / ".submitit").glob("*/*_submission.sh"))
    assert scripts and all("export HF_HUB_OFFLINE=1" in script.read_text() for script in scripts)
