"""A real `mlflow server` on loopback: a run launched through the suite lands there, read back through the REST API."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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


def test_a_run_reaches_a_real_mlflow_server(tmp_path: Path) -> None:
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
        done = launch(tmp_path, "trainer.max_steps=2", f"tracking.uri={base}")
        assert done.returncode == 0, done.stderr[-3000:]

        experiment = call(base, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=tiny")["experiment"]
        [run] = call(base, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
        assert run["info"]["status"] == "FINISHED"
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert metrics["train/steps"] == 2 and 0 < metrics["nDCG_at_10"] <= 1
        listed = call(base, f"/api/2.0/mlflow/artifacts/list?run_id={run['info']['run_id']}")
        assert {"run.trec", "perquery.tsv", "metrics.json"} <= {f["path"] for f in listed["files"]}
        assert list((tmp_path / "store").rglob("run.trec"))  # stored by the server, not beside the client
    finally:
        server.terminate()
        server.wait(timeout=30)
