"""Start-up checks on the composed config: every impossible combination fails here with one line, before any
model or corpus is loaded."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from retrieval_exp.batches import BatchShape
from retrieval_exp.benchmark import Collection, prepare
from retrieval_exp.data import irds
from retrieval_exp.data.negatives import NegativeFilter
from retrieval_exp.data.ranked_lists import refuse_filters
from retrieval_exp.errors import UserError
from retrieval_exp.evaluation import parse_measures
from retrieval_exp.losses.weighted import WeightedSum, combined
from retrieval_exp.models.hub import require_available, require_dropout
from retrieval_exp.settings import build
from retrieval_exp.training.grad_cache import ChunkableModel
from retrieval_exp.training.loop import TrainerSettings


@dataclass(frozen=True)
class Plan:
    """What the run will do, derived from the config."""

    trains: bool
    needs_model: bool
    method: str
    collections: tuple[Collection, ...]
    needs_teacher: bool = False


def target_class(node: DictConfig | None, key: str) -> Any:
    """The class (or function) a config node's `_target_` names, imported but not called."""
    if node is None or "_target_" not in node:
        raise UserError(f"config has no {key}._target_: choose a {key} config group option")
    try:
        return get_object(node._target_)
    except Exception:
        raise UserError(f"{key}._target_={node._target_!r} cannot be imported: check the dotted path") from None


@dataclass(frozen=True)
class LossSpec:
    """What a loss config asks of the data and the model (for a WeightedSum, of all its parts together)."""

    name: str
    batch_shape: BatchShape
    model_kinds: tuple[str, ...]
    needs_teacher: bool


def loss_spec(node: DictConfig | None) -> LossSpec:
    loss = target_class(node, "loss")
    if loss is not WeightedSum:
        return LossSpec(loss.name, loss.batch_shape, loss.model_kinds, loss.needs_teacher)
    parts = {name: target_class(part, f"loss.parts.{name}") for name, part in (node.get("parts") or {}).items()}
    return LossSpec("+".join(parts), *combined(parts))


def config_nodes(node: DictConfig | ListConfig, prefix: str = "") -> Iterator[tuple[str, DictConfig]]:
    """Every mapping in the config with its dotted key prefix ('', 'model.', 'data.train.first_stage.');
    interpolations are not followed."""
    if isinstance(node, DictConfig):
        yield prefix, node
    items = node.items_ex(resolve=False) if isinstance(node, DictConfig) else enumerate(node)
    for key, child in items:
        if isinstance(child, DictConfig | ListConfig):
            yield from config_nodes(child, f"{prefix}{key}.")


def require_complete(cfg: DictConfig) -> None:
    """Every mandatory value (??? in a preset) is set. (OmegaConf.missing_keys fails on an interpolation to one.)"""
    missing = sorted(
        f"{prefix}{key}" for prefix, node in config_nodes(cfg) for key in node if OmegaConf.is_missing(node, key)
    )
    if missing:
        raise UserError(f"{', '.join(missing)} must be set: add {missing[0]}=... to the command (see the preset)")


def validate(cfg: DictConfig) -> Plan:
    """Check the config; the returned plan says what the recipe has to build."""
    parse_measures(cfg.eval.measures)
    retriever = target_class(cfg.retriever, "retriever")
    trains = bool(cfg.train)
    needs_model = trains or retriever.needs_encoder
    if needs_model and cfg.get("model") is None:
        why = "training" if trains else f"retriever={retriever.name}"
        raise UserError(f"{why} needs a model, but model is null: choose one, e.g. model=minilm")
    method = cfg.get("method") or retriever.name
    if needs_model:
        model = target_class(cfg.model, "model")
        require_available(cfg.model.name_or_path)
        require_dropout(cfg.model.get("dropout"))
        if cfg.model.get("lm"):  # a Revela model's language model
            require_available(cfg.model.lm)
        if retriever.needs_encoder:
            _require_kind(model.kind, retriever.model_kinds, f"retriever={retriever.name} ranks with")
    plan = Plan(trains, needs_model, method, tuple(prepare(cfg, needs_model, retriever)))
    if trains:
        loss = _check_training(cfg, model)
        plan = Plan(trains, needs_model, cfg.get("method") or loss.name, plan.collections, loss.needs_teacher)
    if cfg.get("agreement") and not plan.needs_teacher:
        raise UserError(
            "agreement compares a trained student with its teacher's scores: train with a loss that distils a "
            "teacher (e.g. loss=hybrid_kd), or set agreement=null"
        )
    return plan


def _require_kind(kind: str, kinds: tuple[str, ...], what: str) -> None:
    if kind not in kinds:
        raise UserError(
            f"{what} {' or '.join(kinds)} models, but the model is a {kind}: pick a model config that matches "
            "(cross-encoders re-rank: retriever=rerank)"
        )


def _check_training(cfg: DictConfig, model: Any) -> LossSpec:
    """Loss, model, sampler, optimiser, validation and teacher agree; returns what the loss needs."""
    loss = loss_spec(cfg.get("loss"))
    sampler = target_class(cfg.data.get("train"), "data.train")
    _require_kind(model.kind, loss.model_kinds, f"loss {loss.name!r} trains")
    if sampler.batch_shape != loss.batch_shape:
        raise UserError(
            f"loss {loss.name!r} needs {loss.batch_shape.value} batches, but data.train ({sampler.__name__}) "
            f"makes {sampler.batch_shape.value}: pick data that provides them"
        )
    if sampler.requires:
        irds.require(cfg.data.train.dataset, *sampler.requires)
    if cfg.data.train.get("selection"):
        target_class(cfg.data.train.selection, "data.train.selection")
        try:
            instantiate(cfg.data.train.selection)  # a rule is a few numbers: bad ones fail here, not mid-run
        except InstantiationException as err:
            raise UserError(f"data.train.selection: {err.__cause__}") from None
    train = cfg.data.train
    filters = [train.get(key) for key in ("negatives_from", "max_relative_score", "rescorer")]
    if any(value is not None for value in filters):
        if "sampling_strategy" in train:
            refuse_filters(train.sampling_strategy, *filters)
        NegativeFilter(train.depth, *filters)
    settings = build(TrainerSettings, cfg.trainer, "trainer")
    if settings.cache_chunk is not None and not issubclass(model, ChunkableModel):
        raise UserError(
            f"trainer.cache_chunk caches the embeddings of bi-encoders, but the model is a {model.kind}: "
            "set trainer.cache_chunk=null"
        )
    optimizer = target_class(cfg.optim, "optim")
    requirement = getattr(optimizer, "requires", None)  # (package, message when it is missing)
    if requirement and importlib.util.find_spec(requirement[0]) is None:
        raise UserError(requirement[1])
    if settings.loss_patience is not None and cfg.get("validation"):
        raise UserError("trainer.loss_patience and validation both stop early: keep one (e.g. validation=null)")
    if cfg.get("validation"):
        irds.require(cfg.validation.dataset, "queries", "qrels", "scoreddocs")
        parse_measures([cfg.validation.measure])
    if loss.needs_teacher:
        if cfg.get("teacher") is None:
            raise UserError(f"loss {loss.name!r} distils a teacher's scores: choose one, e.g. model@teacher=mpnet")
        require_available(cfg.teacher.name_or_path)
    return loss
