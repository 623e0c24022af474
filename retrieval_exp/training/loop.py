"""The training loop shared by every method: AdamW-style optimiser, warmup/decay, gradient accumulation and
clipping, bf16 autocast, data-parallel processes, periodic checkpoints, a checkpoint at the step a stop signal
arrives in, and resume at the exact step."""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from retrieval_exp.errors import UserError
from retrieval_exp.hardware import Hardware
from retrieval_exp.interfaces import Sampler
from retrieval_exp.losses.base import Loss
from retrieval_exp.settings import Positive, PositiveFloat
from retrieval_exp.training import checkpoint
from retrieval_exp.training.distributed import SINGLE_PROCESS, Ranks, data_parallel
from retrieval_exp.training.grad_cache import cached_backward
from retrieval_exp.training.optim import parameter_groups
from retrieval_exp.training.patience import Patience, TrainingLossStop
from retrieval_exp.training.preemption import DeferredStop, Preempted
from retrieval_exp.training.validation import Validation

log = logging.getLogger(__name__)


@dataclass
class TrainerSettings:
    """The `trainer` config node. One step = batch_size x grad_accum examples (over all processes); max_steps
    overrides epochs. `gather_across_ranks`: the loss of each process sees the batch of every process. `cache_chunk`:
    encode at most that many texts at a time through the gradient cache (grad_cache.py). `loss_patience`: stop after
    that many epochs without a lower mean training loss, keeping the best epoch's weights."""

    epochs: Positive = 1
    max_steps: Positive | None = None
    batch_size: Positive = 32
    grad_accum: Positive = 1
    max_grad_norm: PositiveFloat | None = 1.0
    checkpoint_every: Positive = 100
    log_every: Positive = 10
    no_decay_bias_and_norm: bool = False
    gather_across_ranks: bool = False
    cache_chunk: Positive | None = None
    loss_patience: Positive | None = None


@dataclass
class TrainingResult:
    steps: int
    seconds: float
    examples_per_second: float
    resumed_from_step: int


def train(
    model: Any,
    loss: Loss,
    samples: Sampler,
    optimizer_factory: Callable[..., torch.optim.Optimizer],
    scheduler_factory: Callable[..., torch.optim.lr_scheduler.LRScheduler],
    settings: TrainerSettings,
    hardware: Hardware,
    checkpoint_dir: Path,
    on_metrics: Callable[[dict[str, float], int], None],
    validator: Validation | None = None,
    ranks: Ranks = SINGLE_PROCESS,
) -> TrainingResult:
    """Train `model` on `samples` and return what it took: each step is `_optimizer_step`, then `_after_step`.

    Resumes from checkpoint_dir/last.pt when present. Batches have a fixed size (the last partial one of an epoch
    is dropped), because in-batch losses compare across the batch. With a `validator`, validates every
    `validator.every` steps and at the end, stops early when its patience runs out, and ends with the best-validated
    weights. Over several `ranks`, each trains on its slice of every batch through DDP, every rank validates (same
    weights, same decision) and rank 0 writes the checkpoints. SIGTERM, SIGUSR1 or SIGUSR2 ends training after the
    optimizer step in progress, with a checkpoint, by raising Preempted.
    """
    per_step = settings.batch_size * settings.grad_accum
    steps_per_epoch = len(samples) // per_step
    if steps_per_epoch == 0:
        raise UserError(
            f"{len(samples)} training examples are fewer than one step needs ({per_step} = trainer.batch_size x "
            "trainer.grad_accum): lower them"
        )
    total_steps = settings.max_steps or settings.epochs * steps_per_epoch
    optimizer = optimizer_factory(params=parameter_groups(model, settings.no_decay_bias_and_norm))
    scheduler = scheduler_factory(optimizer=optimizer, total_steps=total_steps)
    window = LogWindow(hardware.torch_device)
    loss_stop = TrainingLossStop(settings.loss_patience) if settings.loss_patience else None
    stopper = validator or loss_stop
    step = _resume(checkpoint_dir, model, optimizer, scheduler, stopper, window)
    resumed_from = step
    if step:  # steps after the checkpoint may have been logged before a crash: they are logged again from here
        log.info("resuming from step %d of %d (%s)", step, total_steps, checkpoint_dir / checkpoint.LAST)
        on_metrics({"train/resumed_from": float(step)}, step)
    session = _Session(
        model,
        data_parallel(model, ranks, hardware.torch_device),
        loss,
        settings,
        hardware,
        ranks,
        optimizer,
        scheduler,
        window,
        checkpoint_dir,
        on_metrics,
        validator,
        loss_stop,
    )
    hardware.for_training(model).train()
    started = time.perf_counter()
    stopped = False
    with (
        tqdm(total=total_steps, initial=step, desc="train", unit="step", disable=not ranks.is_main) as progress,
        DeferredStop() as stop,
    ):
        while step < total_steps and not stopped:
            epoch, offset = divmod(step, steps_per_epoch)
            batches = _epoch_batches(samples, model, epoch, offset, steps_per_epoch, settings, hardware, ranks)
            for _ in range(min(steps_per_epoch - offset, total_steps - step)):
                _optimizer_step(session, batches, step + 1)
                step += 1
                progress.update()
                stopped = _after_step(session, step, total_steps, steps_per_epoch, stop, progress)
                if stopped:
                    break
    seconds = time.perf_counter() - started
    if stopper and stopper.best is not None:
        model.load_state_dict(checkpoint.require(checkpoint_dir, checkpoint.BEST)["model"])
    trained = (step - resumed_from) * per_step
    return TrainingResult(step, seconds, trained / seconds if seconds else 0.0, resumed_from)


@dataclass
class _Session:
    """What one training holds from step to step."""

    model: Any
    forward: torch.nn.Module  # the model, wrapped for DDP over several ranks
    loss: Loss
    settings: TrainerSettings
    hardware: Hardware
    ranks: Ranks
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    window: LogWindow
    checkpoint_dir: Path
    on_metrics: Callable[[dict[str, float], int], None]
    validator: Validation | None
    loss_stop: TrainingLossStop | None

    @property
    def stopper(self) -> Patience | None:
        """What decides early stopping and the best weights, if anything does."""
        return self.validator or self.loss_stop


def _epoch_batches(
    samples: Sampler,
    model: Any,
    epoch: int,
    offset: int,
    steps_per_epoch: int,
    settings: TrainerSettings,
    hardware: Hardware,
    ranks: Ranks,
) -> Iterator[Any]:
    """The collated batches of `epoch` from step `offset` on (this rank's slice of each), the epoch's last partial
    step left out."""
    per_step = settings.batch_size * settings.grad_accum
    examples = samples.epoch(epoch)[offset * per_step : steps_per_epoch * per_step]
    return iter(
        DataLoader(
            cast("Dataset[Any]", examples),  # a sequence of examples: what a map-style dataset needs
            batch_sampler=ranks.shard(len(examples), settings.batch_size),
            collate_fn=model.collate,
            num_workers=hardware.dataloader_workers,
            pin_memory=hardware.torch_device.type == "cuda",
            generator=torch.Generator().manual_seed(epoch),  # keeps the global RNG (dropout) resumable
        )
    )


def _optimizer_step(session: _Session, batches: Iterator[Any], step: int) -> None:
    """Optimizer step `step`: grad_accum micro-batches forward and backward, the gradient clipped, the loss and the
    norm checked to be finite, then the update and the schedule."""
    settings, device = session.settings, session.hardware.torch_device
    step_loss = torch.zeros((), device=device)
    for micro in range(settings.grad_accum):
        batch = next(batches).to(device)
        last = micro == settings.grad_accum - 1
        value = _micro_step(
            session.model, session.forward, session.loss, batch, settings, session.hardware, session.ranks, last
        )
        session.window.add(value, session.loss.terms, settings.grad_accum)
        step_loss = step_loss + value.detach()
        if session.loss_stop:
            session.loss_stop.add(value)
    norm = None
    if settings.max_grad_norm:
        norm = torch.nn.utils.clip_grad_norm_(session.model.parameters(), settings.max_grad_norm)
    _require_finite(step, step_loss, norm, session.loss.terms, session.ranks, device)
    session.optimizer.step()
    session.scheduler.step()
    session.optimizer.zero_grad(set_to_none=True)


def _after_step(
    session: _Session, step: int, total_steps: int, steps_per_epoch: int, stop: DeferredStop, progress: tqdm
) -> bool:
    """What follows optimizer step `step`: its log, validation, the epoch's loss-based stopping, the checkpoint, and
    Preempted when a stop signal came. True when training stops early."""
    settings, ranks, validator, loss_stop = session.settings, session.ranks, session.validator, session.loss_stop
    session.hardware.release_freed_memory()
    if step % settings.log_every == 0 or step == total_steps:
        metrics = session.window.take(ranks, step % settings.log_every or settings.log_every)
        metrics["train/lr"] = float(session.scheduler.get_last_lr()[0])
        progress.set_postfix(loss=f"{metrics['train/loss']:.4f}")
        session.on_metrics(metrics, step)
    stopped = False
    if validator and (step % validator.every == 0 or step == total_steps):
        stopped = _validate(
            validator, session.model, session.hardware, step, session.checkpoint_dir, session.on_metrics, ranks
        )
    if loss_stop and step % steps_per_epoch == 0:
        stopped = _end_epoch(
            loss_stop, session.model, step, steps_per_epoch, session.checkpoint_dir, session.on_metrics, ranks
        )
    signalled = ranks.any(stop.signum is not None, session.hardware.torch_device)
    if step % settings.checkpoint_every == 0 or step == total_steps or stopped or signalled:
        if ranks.is_main:
            _save(session, step)
        ranks.barrier()
    if signalled:
        raise Preempted(stop.signum or signal.SIGTERM, step)
    if stopped and session.stopper is not None:
        best = session.stopper
        log.info("early stop at step %d: best %s %.4f at step %d", step, best.watched, best.best, best.best_step)
    return stopped


class TrainingDiverged(UserError):
    """The loss or the gradient norm is not finite: the run stops before the step writes it into the weights."""


def _require_finite(
    step: int,
    step_loss: torch.Tensor,
    grad_norm: torch.Tensor | None,
    terms: dict[str, torch.Tensor],
    ranks: Ranks,
    device: torch.device,
) -> None:
    """Raise TrainingDiverged (on every rank, if on one) at a non-finite loss or gradient norm, so that a diverged
    run fails at that step rather than finishing with a number."""
    values = [step_loss, *([] if grad_norm is None else [grad_norm])]
    if not ranks.any(not all(bool(torch.isfinite(value)) for value in values), device):
        return
    parts = "".join(f", {name} {float(term):.4g}" for name, term in terms.items())
    norm = "" if grad_norm is None else f", gradient norm {float(grad_norm):.4g}"
    clip = ", set trainer.max_grad_norm" if grad_norm is None else ""
    raise TrainingDiverged(
        f"training diverged at step {step}: loss {float(step_loss):.4g}{parts}{norm}; lower optim.lr{clip} or check "
        "the loss's settings (loss.temperature, ...)"
    )


def _micro_step(
    model: Any,
    forward: torch.nn.Module,
    loss: Loss,
    batch: Any,
    settings: TrainerSettings,
    hardware: Hardware,
    ranks: Ranks,
    last: bool,
) -> torch.Tensor:
    """Forward and backward of one micro-batch (through the gradient cache with `cache_chunk`); its loss / grad_accum
    comes back. Gradients are synchronised across ranks on the `last` micro-batch of the step only."""
    scale = ranks.world if settings.gather_across_ranks else 1  # DDP averages; the gathered loss is already global

    def loss_of(output: Any) -> torch.Tensor:
        with hardware.autocast():
            scored, seen = (
                (ranks.gather(output), ranks.gather(batch)) if settings.gather_across_ranks else (output, batch)
            )
            return loss.compute_loss(scored, seen) / settings.grad_accum

    if settings.cache_chunk:
        return cached_backward(
            model,
            partial(forward, encode=True),
            batch,
            loss_of,
            scale,
            settings.cache_chunk,
            lambda final: _synchronised(forward, last and final),
            hardware.autocast,
        )
    with _synchronised(forward, last):
        with hardware.autocast():
            output = forward(batch)
        value = loss_of(output)
        (value * scale).backward()  # outside autocast, as torch recommends
    return value.detach()


class LogWindow:
    """The training loss (and a composite loss's terms) summed since the last log. Checkpoints keep it, so a resumed
    run logs the values an uninterrupted one does."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, value: torch.Tensor, terms: dict[str, torch.Tensor], grad_accum: int) -> None:
        for name, part in {"loss": value, **{name: term / grad_accum for name, term in terms.items()}}.items():
            self.sums[name] = self.sums.get(name, torch.zeros((), device=self.device)) + part.detach()

    def take(self, ranks: Ranks, steps: int) -> dict[str, float]:
        """The mean per step over the last `steps` steps (and over the ranks), and a fresh window."""
        metrics = {f"train/{name}": ranks.mean(total).item() / steps for name, total in self.sums.items()}
        self.sums = {}
        return metrics

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: total.cpu() for name, total in self.sums.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.sums = {name: total.to(self.device) for name, total in state.items()}


def _synchronised(forward: torch.nn.Module, last_micro_batch: bool) -> contextlib.AbstractContextManager[Any]:
    """DDP synchronises gradients on the last micro-batch of a step only."""
    if isinstance(forward, DistributedDataParallel) and not last_micro_batch:
        return forward.no_sync()
    return contextlib.nullcontext()


def _validate(
    validator: Validation,
    model: Any,
    hardware: Hardware,
    step: int,
    checkpoint_dir: Path,
    on_metrics: Callable[[dict[str, float], int], None],
    ranks: Ranks,
) -> bool:
    """Validate; keep the weights when they are the best so far. True when training should stop."""
    values = validator.score(model, hardware)
    on_metrics({f"val/{name}": value for name, value in values.items()}, step)
    return _keep_best(validator, validator.update_all(values, step), step, model, checkpoint_dir, ranks)


def _end_epoch(
    loss_stop: TrainingLossStop,
    model: Any,
    step: int,
    steps_per_epoch: int,
    checkpoint_dir: Path,
    on_metrics: Callable[[dict[str, float], int], None],
    ranks: Ranks,
) -> bool:
    """Log the epoch's mean training loss; keep the weights when it is the lowest so far. True when training should
    stop."""
    value = ranks.mean(loss_stop.total).item() / steps_per_epoch
    loss_stop.total = torch.zeros_like(loss_stop.total)
    on_metrics({"train/epoch_loss": value}, step)
    return _keep_best(loss_stop, loss_stop.update(value, step), step, model, checkpoint_dir, ranks)


def _keep_best(stopper: Patience, improved: bool, step: int, model: Any, checkpoint_dir: Path, ranks: Ranks) -> bool:
    """After `stopper` recorded a value (`improved`: the best so far), rank 0 saves the weights as the best
    checkpoint when it is. True when the patience has run out."""
    if improved and ranks.is_main:
        checkpoint.save(checkpoint_dir, {"step": step, "model": model.state_dict()}, checkpoint.BEST)
    return stopper.exhausted


def _save(session: _Session, step: int) -> None:
    state = {"step": step, "model": session.model.state_dict(), "optimizer": session.optimizer.state_dict()}
    state |= {"scheduler": session.scheduler.state_dict(), "rng": torch.get_rng_state()}
    state["log_window"] = session.window.state_dict()
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    if session.stopper:
        state["early_stopping"] = session.stopper.state_dict()
    checkpoint.save(session.checkpoint_dir, state)


def _resume(directory: Path, model: Any, optimizer: Any, scheduler: Any, stopper: Any, window: LogWindow) -> int:
    state = checkpoint.load(directory)
    if state is None:
        return 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    window.load_state_dict(state.get("log_window", {}))
    if stopper and "early_stopping" in state:
        stopper.load_state_dict(state["early_stopping"])
    return int(state["step"])
