"""Sweeps under load: two 8-job `launch.py -m` processes at once, recording into one sqlite store, lose no run and
leave none RUNNING."""

import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, launch_command

pytestmark = pytest.mark.slow  # real collections, SLURM, parallel sweeps: the full tier only


def test_two_parallel_sweeps_into_one_store_record_every_run_finished(tmp_path: Path) -> None:
    sweeps = {"a": "seed=1,2,3,4,5,6,7,8", "b": "seed=11,12,13,14,15,16,17,18"}
    processes = []
    for name, values in sweeps.items():
        command = [
            f"hydra.sweep.dir={tmp_path}/sweep_{name}" if argument.startswith("hydra.sweep.dir=") else argument
            for argument in launch_command(tmp_path, values, "trainer.max_steps=2", "eval.depth=5", multirun=True)
        ]
        processes.append(subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True))
    errors = [process.communicate(timeout=900)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], "\n".join(error[-2000:] for error in errors)

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    recorded = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], max_results=100)
    parents = [run for run in recorded if run.data.tags.get("sweep_parent") == "true"]
    children = [run for run in recorded if run.data.tags.get("sweep_parent") != "true"]
    assert len(parents) == 2 and len(children) == 16, [(r.info.status, r.data.tags) for r in recorded]
    assert {run.info.status for run in recorded} == {"FINISHED"}
    assert sorted(int(run.data.params["seed"]) for run in children) == [*range(1, 9), *range(11, 19)]
    for parent in parents:
        mine = [run for run in children if run.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        assert len(mine) == 8 and all("train/loss" in run.data.metrics for run in mine)
