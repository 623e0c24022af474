"""Config values that name an earlier MLflow run instead of a path: `model.name_or_path` (and the teacher's) takes
the run whose saved model to start from (stage 2 from stage 1's checkpoint; on another machine, its `model`
artifact), and a RunFile's `path` the run whose run.trec to read (a teacher ranking made by the suite). Only FINISHED
runs serve: a failed run's outputs are not results."""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from functools import cache
from pathlib import Path

from mlflow.entities import Run as MlflowRun
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from retrieval_exp.errors import UserError
from retrieval_exp.plan import config_nodes
from retrieval_exp.tracking.mlflow_run import MODEL_ARTIFACT, absolute_uri

RUN_ID = re.compile(r"[0-9a-f]{32}")
RUN_FILE_TARGET = "retrieval_exp.retrieval.run.RunFile"


def is_run_id(value: object) -> bool:
    return isinstance(value, str) and RUN_ID.fullmatch(value) is not None


def resolve_references(cfg: DictConfig, tracking_uri: str, cache_dir: Path) -> dict[str, str]:
    """Replace each run id standing for a model folder or a run file by its path, in place; returns
    {config key: run id} for the record."""
    sources: dict[str, str] = {}
    for key, node in config_nodes(cfg):
        if is_run_id(node.get("name_or_path")):
            run_id = node.name_or_path
            node.name_or_path = str(model_folder(tracking_uri, run_id, cache_dir / "mlflow_runs" / run_id))
            sources[f"{key}name_or_path"] = run_id
        if node.get("_target_") == RUN_FILE_TARGET and is_run_id(node.get("path")):
            run_id = node.path
            finished_run(tracking_uri, run_id)
            target = cache_dir / "mlflow_runs" / run_id
            target.mkdir(parents=True, exist_ok=True)
            node.path = _client(tracking_uri).download_artifacts(run_id, "run.trec", str(target))
            sources[f"{key}path"] = run_id
    return sources


def model_folder(tracking_uri: str, run_id: str, download_dir: Path) -> Path:
    """The run's saved model: its output folder where that is still on this machine, else its `model` artifact,
    downloaded once into `download_dir` (renamed into place whole, so that a broken-off download is never used)."""
    local = Path(finished_run(tracking_uri, run_id).data.tags.get("output_dir", "")) / "model"
    downloaded = download_dir / MODEL_ARTIFACT
    for folder in (local, downloaded):
        if (folder / "config.json").is_file():
            return folder
    client = _client(tracking_uri)
    if MODEL_ARTIFACT not in {artifact.path for artifact in client.list_artifacts(run_id)}:
        raise UserError(
            f"MLflow run {run_id} has no saved model: none at {local} (its output folder was moved, or it ran with "
            "save_model=false) and none among its artifacts (tracking.log_model=false): give the model folder's path"
        )
    download_dir.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=download_dir))
    try:
        fetched = Path(client.download_artifacts(run_id, MODEL_ARTIFACT, str(partial)))
        with contextlib.suppress(OSError):  # another process put the same download in place first
            fetched.rename(downloaded)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return downloaded


@cache
def _client(tracking_uri: str) -> MlflowClient:
    """Opened only when a reference is found: a config without one must not create a store."""
    return MlflowClient(tracking_uri=absolute_uri(tracking_uri))


def finished_run(tracking_uri: str, run_id: str) -> MlflowRun:
    client = _client(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise UserError(
            f"{run_id} looks like an MLflow run id, but the store {client.tracking_uri} has no such run: check "
            "tracking.uri"
        ) from None
    if run.info.status != "FINISHED":
        raise UserError(f"MLflow run {run_id} is {run.info.status}: its outputs are not results; use a finished run")
    return run
