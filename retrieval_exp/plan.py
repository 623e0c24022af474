"""The run's plan, made from the composed config at start-up: what the run will do, with the objects it needs built.
Every impossible combination fails here with one line, before any model or corpus is loaded and before the MLflow
store is touched. (Held-out validation during training is another thing: `cfg.validation`, training/validation.)

The checks are by construction: every configured object that is cheap to build (hardware, retriever and its first
stage, loss, optimiser, scheduler, selection rule, run-file readers) is built here, each value checked against its
declaration first (retrieval_exp.settings), so each rule lives once, in the constructor or annotation that owns it.
The built objects travel in the Plan, and the recipe uses them instead of building them again.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from retrieval_exp.benchmark import Collection, prepare
from retrieval_exp.benchmark import collections as test_collections
from retrieval_exp.data import held_out, irds
from retrieval_exp.errors import UserError, user_error
from retrieval_exp.hardware import Hardware
from retrieval_exp.losses.base import Loss
from retrieval_exp.measures import EvalSettings, parse_measures
from retrieval_exp.models.hub import require_available, require_dropout
from retrieval_exp.settings import build, check_arguments
from retrieval_exp.training.grad_cache import ChunkableModel
from retrieval_exp.training.loop import TrainerSettings
from retrieval_exp.training.validation import RetrievalValidation


@dataclass(frozen=True)
class Plan:
    """What the run will do, derived from the config, with the objects validation built for it."""

    trains: bool
    needs_model: bool
    method: str
    collections: tuple[Collection, ...]
    hardware: Hardware
    build_retriever: Callable[..., Any]  # the retriever, its first stage built, waiting for the encoder
    loss: Loss | None = None
    trainer: TrainerSettings | None = None

    @property
    def needs_teacher(self) -> bool:
        return self.loss is not None and self.loss.needs_teacher

    def training(self) -> tuple[Loss, TrainerSettings]:
        """The loss and the trainer settings of a run that trains."""
        if self.loss is None or self.trainer is None:
            raise ValueError("this run does not train: cfg.train is false")
        return self.loss, self.trainer


def target_class(node: DictConfig | None, key: str) -> Any:
    """The class (or function) a config node's `_target_` names, imported but not called."""
    if node is None or "_target_" not in node:
        raise UserError(f"config has no {key}._target_: choose a {key} config group option")
    hydra_log = logging.getLogger("hydra.utils")  # which logs a failed import: this line replaces its traceback
    quiet, hydra_log.disabled = hydra_log.disabled, True
    try:
        return get_object(node._target_)
    except Exception:
        raise UserError(f"{key}._target_={node._target_!r} cannot be imported: check the dotted path") from None
    finally:
        hydra_log.disabled = quiet


def check_node(node: DictConfig, key: str) -> None:
    """Every `_target_` in `node` (itself and the nodes nested in it) imports, and its values match its declaration."""
    for prefix, inner in config_nodes(node):
        if "_target_" in inner:
            where = f"{key}.{prefix}".rstrip(".")
            check_arguments(target_class(inner, where), inner, where)


def construct(node: DictConfig, key: str, **options: Any) -> Any:
    """The object `node` configures (`key` is its config key), checked first; a constructor's refusal is one line."""
    check_node(node, key)
    try:
        return instantiate(node, **options)
    except InstantiationException as err:
        refusal = user_error(err)
        if refusal is not None:
            raise refusal from None
        raise UserError(f"{key} ({node._target_}) cannot be built: {err.__cause__ or err}") from None


def config_nodes(node: DictConfig | ListConfig, prefix: str = "") -> Iterator[tuple[str, DictConfig]]:
    """Every mapping in the config with its dotted key prefix ('', 'model.', 'data.train.first_stage.');
    interpolations are not followed."""
    if isinstance(node, DictConfig):
        yield prefix, node
    items = node.items_ex(resolve=False) if isinstance(node, DictConfig) else enumerate(node)
    for key, child in items:
        if isinstance(child, DictConfig | ListConfig):
            yield from config_nodes(child, f"{prefix}{key!s}.")


def require_complete(cfg: DictConfig) -> None:
    """Every mandatory value (??? in a preset) is set. (OmegaConf.missing_keys fails on an interpolation to one.)"""
    missing = sorted(
        f"{prefix}{key!s}" for prefix, node in config_nodes(cfg) for key in node if OmegaConf.is_missing(node, key)
    )
    if missing:
        raise UserError(f"{', '.join(missing)} must be set: add {missing[0]}=... to the command (see the preset)")


def settle_validation(cfg: DictConfig) -> None:
    """Check what validation and tuning ask for, and, where validation has no dataset, hold a seeded share of the
    training queries out: validation.dataset and data.train.dataset become the two parts' ids (data/held_out.py),
    so that config.yaml and MLflow name the split the run used."""
    validation, objective = cfg.get("validation"), cfg.get("objective")
    if not validation:
        if objective is not None or not cfg.evaluate:
            why = f"objective={objective}" if objective is not None else "evaluate=false"
            raise UserError(f"{why} reads the run's validation, but validation is null: add validation=dev")
        return
    if not cfg.train:
        raise UserError("validation runs during training, and train=false: set validation=null")
    if validation.dataset is None:
        base = cfg.data.get("train", {}).get("dataset")
        if base is None:
            raise UserError(
                "validation=dev without a dev split holds training queries out, but data.train has no "
                "dataset: set validation.dataset to a dev split"
            )
        fit, val = held_out.split_ids(base, validation.held_out, validation.held_out_seed)
        with open_dict(cfg):
            cfg.validation.dataset, cfg.data.train.dataset = val, fit
    check_node(validation, "validation")  # after the split is named: its share's range is checked here too
    tested = {collection.test for collection in test_collections(cfg)}
    if cfg.evaluate and validation.dataset in tested:
        raise UserError(
            f"validation.dataset={validation.dataset} is a test collection of this run: validate on a dev split "
            "(or validation.dataset=null to hold training queries out)"
        )
    if objective is not None:
        measures = {f"val/{measure}" for measure in parse_measures([validation.measure, *validation.measures])}
        if objective not in measures:
            kind = "a test measure" if not str(objective).startswith("val/") else "not measured"
            raise UserError(
                f"objective={objective} is {kind}: tune on validation, one of {', '.join(sorted(measures))}"
            )


def build_plan(cfg: DictConfig) -> Plan:
    """Check the config and build what is cheap to build; the returned plan says what the recipe has to do."""
    build(EvalSettings, cfg.eval, "eval")
    parse_measures(cfg.eval.measures)
    hardware = construct(cfg.hardware, "hardware")
    retriever = target_class(cfg.retriever, "retriever")
    trains = bool(cfg.train)
    needs_model = trains or retriever.needs_encoder
    if needs_model and cfg.get("model") is None:
        why = "training" if trains else f"retriever={retriever.name}"
        raise UserError(f"{why} needs a model, but model is null: choose one, e.g. model=minilm")
    model = None
    if needs_model:
        model = target_class(cfg.model, "model")
        check_node(cfg.model, "model")
        require_available(cfg.model.name_or_path)
        require_dropout(cfg.model.get("dropout"))
        if cfg.model.get("lm"):  # a Revela model's language model
            require_available(cfg.model.lm)
        if retriever.needs_encoder:
            _require_kind(model.kind, retriever.model_kinds, f"retriever={retriever.name} ranks with")
    collections = tuple(prepare(cfg, needs_model, retriever)) if cfg.evaluate else ()  # evaluate=false: none read
    build_retriever = construct(cfg.retriever, "retriever", _partial_=True)  # its first stage (a run file) is read
    build_retriever(**({"encoder": None, "hardware": hardware} if retriever.needs_encoder else {}))  # its own rules
    plan = Plan(trains, needs_model, cfg.get("method") or retriever.name, collections, hardware, build_retriever)
    if trains:
        loss, trainer = _check_training(cfg, model, retriever)
        plan = replace(plan, method=cfg.get("method") or loss.name, loss=loss, trainer=trainer)
    if cfg.tracking.get("register_as") and not (trains and cfg.save_model and cfg.tracking.log_model):
        raise UserError(
            f"tracking.register_as={cfg.tracking.register_as} registers the trained model's artifact, which this run "
            "does not log: train with save_model=true and tracking.log_model=true, or set tracking.register_as=null"
        )
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


def _check_training(cfg: DictConfig, model: Any, retriever: Any) -> tuple[Loss, TrainerSettings]:
    """Loss, model, sampler, optimiser, scheduler, validation and teacher agree; returns the loss and the trainer
    settings, built."""
    settings = build(TrainerSettings, cfg.trainer, "trainer")  # first: data.train's settings interpolate them
    loss: Loss = construct(cfg.loss, "loss")
    train = cfg.data.get("train")
    sampler = target_class(train, "data.train")
    _require_kind(model.kind, loss.model_kinds, f"loss {loss.name!r} trains")
    if sampler.batch_shape != loss.batch_shape:
        raise UserError(
            f"loss {loss.name!r} needs {loss.batch_shape.value} batches, but data.train ({sampler.__name__}) "
            f"makes {sampler.batch_shape.value}: pick data that provides them"
        )
    if sampler.requires:
        irds.require(train.dataset, *sampler.requires)
    # Built with what it nests (a selection rule, a miner, a stored ranking whose file is read), but a rescorer:
    # a model, of which only the class is built now; its weights load when training starts.
    rescorer = train.get("rescorer")
    construct(train, "data.train", **({} if rescorer is None else {"rescorer": instantiate(rescorer, _partial_=True)}))
    if settings.cache_chunk is not None and not issubclass(model, ChunkableModel):
        raise UserError(
            f"trainer.cache_chunk caches the embeddings of bi-encoders, but the model is a {model.kind}: "
            "set trainer.cache_chunk=null"
        )
    _check_optimiser(cfg)
    if settings.loss_patience is not None and cfg.get("validation"):
        raise UserError("trainer.loss_patience and validation both stop early: keep one (e.g. validation=null)")
    if cfg.get("validation"):
        validation = construct(cfg.validation, "validation")
        irds.require(validation.dataset, *validation.requires)
        if isinstance(validation, RetrievalValidation) and not retriever.needs_encoder:
            raise UserError(
                f"validation ranks with the run's retriever, but retriever={retriever.name} does not use the model: "
                "choose one that does (retriever=dense, retriever=rerank)"
            )
    if loss.needs_teacher:
        if cfg.get("teacher") is None:
            raise UserError(f"loss {loss.name!r} distils a teacher's scores: choose one, e.g. model@teacher=mpnet")
        require_available(cfg.teacher.name_or_path)
    return loss, settings


def _check_optimiser(cfg: DictConfig) -> None:
    """The optimiser and the schedule, built on one probe parameter: torch's own checks (a negative lr, betas out
    of range) run now, not at the first step."""
    requirement = getattr(target_class(cfg.optim, "optim"), "requires", None)  # (package, message when missing)
    if requirement and importlib.util.find_spec(requirement[0]) is None:
        raise UserError(requirement[1])
    optimizer = construct(cfg.optim, "optim")
    try:
        probe = optimizer([torch.nn.Parameter(torch.zeros(1))])
    except (ValueError, TypeError, RuntimeError) as err:
        raise UserError(f"optim ({cfg.optim._target_}) refuses its settings: {err}") from None
    construct(cfg.scheduler, "scheduler")(optimizer=probe, total_steps=1)
