"""A real `mlflow server` on loopback: a run launched through the suite lands there, read back through the REST API."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from retrieval_exp.tracking.lifecycle import RUN_ID_FILE
from tests.conftest import launch


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def call(base: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def ranked(run_file: Path) -> list[list[str]]:
    """A TREC run's lines without their run tag, which names the method (infonce, then dense)."""
    return [line.split()[:5] for line in run_file.read_text().splitlines()]


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """The address of a real `mlflow server` on loopback, with its own store and artifact folder under tmp_path."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{tmp_path}/server.db", "--artifacts-destination", str(tmp_path / "store"),
    ]  # fmt: skip
    with (tmp_path / "server.log").open("w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=5) as response:
                    if response.read().strip() == b"OK":
                        break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-2000:]
                time.sleep(1)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_run_reaches_a_real_mlflow_server(tmp_path: Path, mlflow_server: str) -> None:
    done = launch(tmp_path, "trainer.max_steps=2", f"tracking.uri={mlflow_server}")
    assert done.returncode == 0, done.stderr[-3000:]

    experiment = call(mlflow_server, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=tiny")["experiment"]
    [run] = call(mlflow_server, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})[
        "runs"
    ]
    assert run["info"]["status"] == "FINISHED"
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert metrics["train/steps"] == 2 and 0 < metrics["nDCG_at_10"] <= 1
    listed = call(mlflow_server, f"/api/2.0/mlflow/artifacts/list?run_id={run['info']['run_id']}")
    assert {"run.trec", "perquery.tsv", "metrics.json", "model"} <= {f["path"] for f in listed["files"]}
    assert list((tmp_path / "store").rglob("run.trec"))  # stored by the server, not beside the client
    assert list((tmp_path / "store").rglob("model/modules.json"))  # the model folder, as saved


def test_a_second_stage_elsewhere_starts_from_the_first_by_run_id(tmp_path: Path, mlflow_server: str) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    done = launch(first, "trainer.max_steps=2", f"tracking.uri={mlflow_server}")
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = (first / "run" / RUN_ID_FILE).read_text()
    ranking = ranked(first / "run" / "run.trec")
    shutil.rmtree(first)  # its output folder is gone, as on another node
    done = launch(second, f"model.name_or_path={run_id}", "train=false", f"tracking.uri={mlflow_server}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert ranked(second / "run" / "run.trec") == ranking  # the trained model, from the server
    downloaded = Path(os.environ["RETRIEVAL_EXP_CACHE"]) / "mlflow_runs" / run_id / "model"
    assert (downloaded / "model.safetensors").is_file() and not list(downloaded.parent.glob(".partial-*"))
    third = tmp_path / "third"
    done = launch(third, f"model.name_or_path={run_id}", "train=false", f"tracking.uri={mlflow_server}")
    assert done.returncode == 0 and ranked(third / "run" / "run.trec") == ranking  # from the download
