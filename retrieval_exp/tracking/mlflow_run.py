"""MLflow records: the store, the experiment, and one run's params, tags, metrics, artifacts and final status."""

from __future__ import annotations

import argparse
import fcntl
import logging
import re
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from retrieval_exp.errors import UserError

for _noisy in ("alembic", "mlflow"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

MAX_PARAM_LENGTH = 6000
DEFAULT_STORE = "sqlite:///results/mlflow.db"  # conf/config.yaml's tracking.uri: where launch.py records by default
MODEL_ARTIFACT = "model"  # the artifact folder that holds a run's saved model (tracking.log_model)
STORE_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")


def add_store_argument(parser: argparse.ArgumentParser) -> None:
    """--tracking-uri for the command-line tools that read or write launch.py's store."""
    parser.add_argument("--tracking-uri", default=DEFAULT_STORE, help=f"MLflow store (default: {DEFAULT_STORE})")


def require_store(uri: str) -> None:
    """`uri` names a kind of store MLflow keeps runs in (before anything is written to it)."""
    scheme = urlparse(uri).scheme.split("+")[0]  # postgresql+psycopg2 is postgresql
    if scheme not in STORE_SCHEMES and len(scheme) > 1:  # none, or a drive letter: a folder
        raise UserError(
            f"tracking.uri={uri!r} is not an MLflow store (its scheme {scheme!r} is none of "
            f"{', '.join(STORE_SCHEMES)}): use e.g. {DEFAULT_STORE}, a folder, or http://host:5000 for a server"
        )


def absolute_uri(uri: str) -> str:
    """sqlite URIs with a relative path made absolute, so every process of a sweep opens the same file."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        path = Path(uri[len(prefix) :]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(path)
    return uri


def open_experiment(uri: str, artifact_root: str, name: str) -> tuple[MlflowClient, str]:
    """The client and the id of experiment `name`, creating the store and the experiment on first use. With an
    `mlflow server` URI the server keeps the artifacts (`artifact_root` is for local stores)."""
    uri = absolute_uri(uri)
    with _first_use(uri):
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(name)
    if found is not None:
        return client, found.experiment_id
    remote = uri.startswith(("http://", "https://"))
    try:
        return client, client.create_experiment(
            name, artifact_location=None if remote else Path(artifact_root).resolve().as_uri()
        )
    except MlflowException:  # created meanwhile by a concurrent job
        existing = client.get_experiment_by_name(name)
        assert existing is not None, f"MLflow experiment {name!r} was created, then deleted"
        return client, existing.experiment_id


@contextmanager
def _first_use(uri: str) -> Iterator[None]:
    """Holds a lock beside a sqlite store while it is opened: MLflow creates and migrates the schema on first use,
    and two processes doing it at once collide (`duplicate column name`), as two sweeps started together would."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    with Path(f"{uri[len('sqlite:///') :]}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def metric_key(name: str) -> str:
    """An ir_measures name as MLflow allows it: 'nDCG@10' -> 'nDCG_at_10' (MLflow forbids '@')."""
    return re.sub(r"[^\w\-. :/]", "_", name.replace("@", "_at_"))


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {'model.pooling': 'mean', ...}, as MLflow params."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = str(value)[:MAX_PARAM_LENGTH]
    return flat


def git_commit() -> str:
    """HEAD of the suite's checkout, with '-dirty' when it has uncommitted changes; 'unknown' outside git."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(here), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def close_abandoned(client: MlflowClient, run_id: str, successor: str) -> None:
    """Mark KILLED run `run_id` if it is still RUNNING: its process died without a signal before its first
    checkpoint (kill -9, OOM), so there is nothing to resume and `successor` starts over."""
    try:
        if client.get_run(run_id).info.status != "RUNNING":
            return
    except MlflowException:  # not in this store (tracking.uri changed since)
        return
    client.set_tag(run_id, "error", f"ended without a signal before its first checkpoint; run {successor} starts over")
    client.set_terminated(run_id, "KILLED")


class TrackedRun:
    """One MLflow run, written through the client (no global active-run state, so sweeps in one process are safe)."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    @classmethod
    def start(
        cls,
        client: MlflowClient,
        experiment_id: str,
        name: str,
        tags: Mapping[str, str],
        params: Mapping[str, str],
        resume_run_id: str | None = None,
    ) -> TrackedRun:
        """A new run (params logged), or the run `resume_run_id` set running again."""
        if resume_run_id:
            client.update_run(resume_run_id, status="RUNNING")
            return cls(client, resume_run_id)
        run = cls(client, client.create_run(experiment_id, run_name=name, tags=dict(tags)).info.run_id)
        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), 100):
            client.log_batch(run.run_id, params=items[start : start + 100])
        return run

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        stamp = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(metric_key(k), float(v), stamp, step) for k, v in metrics.items()]
        )

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def log_artifacts(self, paths: Iterable[Path], folder: str | None = None) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path), folder)

    def log_folder(self, path: Path, folder: str) -> None:
        """Every file under `path`, as the run's artifact folder `folder`."""
        self.client.log_artifacts(self.run_id, str(path), folder)

    def register(self, name: str, folder: str) -> str:
        """A new version of the registered model `name` (created when new) from the artifact folder `folder`;
        returns the version, also tagged on the run."""
        with suppress(MlflowException):  # it exists
            self.client.create_registered_model(name)
        source = f"runs:/{self.run_id}/{folder}"
        version = self.client.create_model_version(name, source, run_id=self.run_id).version
        self.set_tags({"registered_model": f"{name}/{version}"})
        return str(version)

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


class Untracked(TrackedRun):
    """Records nothing: the stand-in on the processes of a data-parallel job other than rank 0."""

    def __init__(self) -> None:  # no client: every method that would use one is overridden
        self.run_id = ""

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def log_artifacts(self, paths: Iterable[Path], folder: str | None = None) -> None:
        pass

    def log_folder(self, path: Path, folder: str) -> None:
        pass

    def register(self, name: str, folder: str) -> str:
        return ""


UNTRACKED = Untracked()


@contextmanager
def system_metrics(run: TrackedRun, every_seconds: float | None, resume: bool) -> Iterator[None]:
    """While the block runs, sample CPU, memory, disk, network (and GPU) use into the run as `system/*` metrics
    every `every_seconds` (None: off), with MLflow's own monitor; the last part-interval is kept too."""
    if not every_seconds:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(
        run.run_id, sampling_interval=every_seconds, resume_logging=resume, tracking_uri=run.client.tracking_uri
    )
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()
        # MLflow drops the samples of the last, unfinished interval, so a run shorter than one interval would have
        # none: publish them.
        if tail := monitor.aggregate_metrics():
            monitor.publish_metrics(tail)
            monitor.mlflow_logger.flush()
