"""Output directories named by the config, not the clock (`${config_key:run}` and `${config_key:sweep}` in
conf/config.yaml).

The same config always runs in the same directory, so a job that SLURM requeues, or that is launched again after a
failure, finds its checkpoints and its MLflow run there, and a finished one is not run twice. A timestamp would
send a requeued job to a fresh directory and lose its state.
"""

from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf

from retrieval_exp.settings import plain

KEY_LENGTH = 10


def config_key(kind: str, *, _root_: DictConfig) -> str:
    """A short hash of the composed config as written (before interpolation, so the machine's environment does not
    enter it). `kind="sweep"` also hashes the sweep's overrides, which the master config of a multirun leaves out;
    its jobs would hash their own configs, so tracking.sweep pins the master's value for them."""
    config = plain(_root_, resolve=False)
    config.pop("hydra", None)
    parts: list = [config]
    if kind == "sweep":
        parts.append(list(_root_.hydra.overrides.task))
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def register_resolver() -> None:
    if not OmegaConf.has_resolver("config_key"):
        OmegaConf.register_new_resolver("config_key", config_key)
