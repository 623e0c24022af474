"""`+prefetch=true`: fetch every model and dataset a run needs while there is a network (a login node), so that its
jobs can run with HF_HUB_OFFLINE=1 on compute nodes without one. With hardware=slurm the launcher prefetches for
every job of the sweep before it submits them; a local run prefetches, then runs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from huggingface_hub import snapshot_download
from omegaconf import DictConfig, OmegaConf

from retrieval_exp.benchmark import collections
from retrieval_exp.data import irds
from retrieval_exp.data.local import register_all
from retrieval_exp.settings import plain
from retrieval_exp.tracking.references import is_run_id

log = logging.getLogger(__name__)
MODEL_KEYS = ("name_or_path", "lm")  # model, teacher, Revela's LM, a validation's re-ranker
DATASET_KEYS = ("test", "dataset")  # data.test, data.train.dataset, validation.dataset
SKIPPED_FILES = ["onnx/*", "openvino/*", "*.onnx", "*.h5", "*.msgpack", "*.ot", "*.tflite", "coreml/*"]
DATASET_PARTS = ("docs", "queries", "qrels", "docpairs", "scoreddocs")


def needs(cfg: DictConfig) -> tuple[list[str], list[str]]:
    """The Hugging Face hub ids and the ir_datasets ids the config names (local folders, a benchmark's collections
    read from folders, and MLflow runs left out)."""
    tree = plain(OmegaConf.masked_copy(cfg, [str(key) for key in cfg if key != "hydra"]))
    models = sorted({v for k, v in _items(tree) if k in MODEL_KEYS and _is_hub_id(v)})
    local = {collection.test for collection in collections(cfg) if collection.folder}
    datasets = sorted({v for k, v in _items(tree) if k in DATASET_KEYS and isinstance(v, str)} - local)
    return models, datasets


def prefetch(cfg: DictConfig) -> tuple[list[str], list[str]]:
    """Download what `needs(cfg)` lists into the ordinary caches (HF_HOME, IR_DATASETS_HOME); returns the lists."""
    register_all(cfg.data.get("register"))
    models, datasets = needs(cfg)
    for model in models:
        log.info("prefetch model %s", model)
        snapshot_download(model, ignore_patterns=SKIPPED_FILES)
    for dataset_id in datasets:
        log.info("prefetch dataset %s", dataset_id)
        dataset = irds.load(dataset_id)
        for part in DATASET_PARTS:
            if getattr(dataset, f"has_{part}")():
                next(iter(getattr(dataset, f"{part}_iter")()), None)  # the first item downloads the whole part
    return models, datasets


def _items(tree: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield key, value
            yield from _items(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _items(value)


def _is_hub_id(value: Any) -> bool:
    return isinstance(value, str) and not Path(value).expanduser().exists() and not is_run_id(value)
