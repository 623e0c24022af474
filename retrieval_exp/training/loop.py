"""The training loop shared by every method: AdamW-style optimiser, warmup/decay, gradient accumulation and
clipping, bf16 autocast, periodic checkpoints and resume at the exact step."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from retrieval_exp.errors import UserError
from retrieval_exp.hardware import Hardware
from retrieval_exp.losses.base import Loss
from retrieval_exp.training import checkpoint
from retrieval_exp.training.optim import parameter_groups
from retrieval_exp.training.rerank_validation import RerankValidation

log = logging.getLogger(__name__)


@dataclass
class TrainerSettings:
    """The `trainer` config node. One step = batch_size x grad_accum examples; max_steps overrides epochs."""

    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 32
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0
    checkpoint_every: int = 100
    log_every: int = 10
    no_decay_bias_and_norm: bool = False


@dataclass
class TrainingResult:
    steps: int
    seconds: float
    examples_per_second: float
    resumed_from_step: int


def train(
    model: Any,
    loss: Loss,
    samples: Any,
    optimizer_factory: Callable[..., torch.optim.Optimizer],
    scheduler_factory: Callable[..., torch.optim.lr_scheduler.LRScheduler],
    settings: TrainerSettings,
    hardware: Hardware,
    checkpoint_dir: Path,
    on_metrics: Callable[[dict[str, float], int], None],
    validator: RerankValidation | None = None,
) -> TrainingResult:
    """Train `model` on `samples` (an object with len() and epoch(i) -> examples) and return what it took.

    Resumes from checkpoint_dir/last.pt when present. Batches have a fixed size (the last partial one of an epoch
    is dropped), because in-batch losses compare across the batch. With a `validator`, validates every
    `validator.every` steps and at the end, stops early when its patience runs out, and ends with the best-validated
    weights.
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
    step = _resume(checkpoint_dir, model, optimizer, scheduler, validator)
    resumed_from = step
    if step:
        log.info("resuming from step %d of %d (%s)", step, total_steps, checkpoint_dir / checkpoint.LAST)
    model.train()
    started = time.perf_counter()
    running = torch.zeros((), device=hardware.torch_device)
    running_terms: dict[str, torch.Tensor] = {}
    stopped = False
    with tqdm(total=total_steps, initial=step, desc="train", unit="step") as progress:
        while step < total_steps and not stopped:
            epoch, offset = divmod(step, steps_per_epoch)
            examples = samples.epoch(epoch)[offset * per_step : steps_per_epoch * per_step]
            batches = iter(
                DataLoader(
                    examples,
                    batch_size=settings.batch_size,
                    collate_fn=model.collate,
                    num_workers=hardware.dataloader_workers,
                    pin_memory=hardware.torch_device.type == "cuda",
                    generator=torch.Generator().manual_seed(epoch),  # keeps the global RNG (dropout) resumable
                )
            )
            for _ in range(min(steps_per_epoch - offset, total_steps - step)):
                for _ in range(settings.grad_accum):
                    batch = next(batches).to(hardware.torch_device)
                    with hardware.autocast():
                        value = loss.compute_loss(model.training_output(batch), batch) / settings.grad_accum
                    value.backward()
                    running += value.detach()
                    for name, term in loss.terms.items():
                        running_terms[name] = running_terms.get(name, 0) + term / settings.grad_accum
                if settings.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                progress.update()
                if step % settings.log_every == 0 or step == total_steps:
                    steps_logged = step % settings.log_every or settings.log_every
                    metrics = {"train/loss": running.item() / steps_logged, "train/lr": scheduler.get_last_lr()[0]}
                    metrics |= {f"train/{name}": term.item() / steps_logged for name, term in running_terms.items()}
                    progress.set_postfix(loss=f"{metrics['train/loss']:.4f}")
                    on_metrics(metrics, step)
                    running.zero_()
                    running_terms.clear()
                if validator and (step % validator.every == 0 or step == total_steps):
                    stopped = _validate(validator, model, hardware, step, checkpoint_dir, on_metrics)
                if step % settings.checkpoint_every == 0 or step == total_steps or stopped:
                    _save(checkpoint_dir, step, model, optimizer, scheduler, validator)
                if stopped:
                    log.info(
                        "early stop at step %d: best %s %.4f at step %d",
                        step,
                        validator.measure,
                        validator.best,
                        validator.best_step,
                    )
                    break
    seconds = time.perf_counter() - started
    if validator and validator.best is not None:
        model.load_state_dict(checkpoint.load(checkpoint_dir, checkpoint.BEST)["model"])
    trained = (step - resumed_from) * per_step
    return TrainingResult(step, seconds, trained / seconds if seconds else 0.0, resumed_from)


def _validate(
    validator: RerankValidation,
    model: Any,
    hardware: Hardware,
    step: int,
    checkpoint_dir: Path,
    on_metrics: Callable[[dict[str, float], int], None],
) -> bool:
    """Validate; keep the weights when they are the best so far. True when training should stop."""
    value = validator.score(model, hardware)
    on_metrics({f"val/{validator.measure}": value}, step)
    if validator.update(value, step):
        checkpoint.save(checkpoint_dir, {"step": step, "model": model.state_dict()}, checkpoint.BEST)
    return validator.exhausted


def _save(directory: Path, step: int, model: Any, optimizer: Any, scheduler: Any, validator: Any) -> None:
    state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict()}
    state |= {"scheduler": scheduler.state_dict(), "rng": torch.get_rng_state()}
    if validator:
        state["validation"] = validator.state_dict()
    checkpoint.save(directory, state)


def _resume(directory: Path, model: Any, optimizer: Any, scheduler: Any, validator: Any) -> int:
    state = checkpoint.load(directory)
    if state is None:
        return 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    if validator and "validation" in state:
        validator.load_state_dict(state["validation"])
    return int(state["step"])
