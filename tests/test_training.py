"""The training loop: schedule shape, loss going down, and resume continuing at the exact step."""

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from retrieval_exp.data.local import register_all
from retrieval_exp.hardware import Hardware, seed_everything
from retrieval_exp.training.loop import TrainerSettings, TrainingResult, train
from retrieval_exp.training.rerank_validation import RerankValidation
from retrieval_exp.training.schedule import warmup_decay
from tests.conftest import TINY, compose_config


def test_warmup_then_linear_decay() -> None:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = warmup_decay(optimizer, total_steps=10, warmup=0.2, decay="linear")
    rates = []
    for _ in range(10):
        rates.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert rates == pytest.approx([0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])


class Interrupted(Exception):
    pass


@dataclass
class Trained:
    model: torch.nn.Module
    result: TrainingResult
    losses: list[float]
    validations: list[float]  # the values early stopping watched: val/* or train/epoch_loss


def run_training(
    checkpoints: Path,
    max_steps: int,
    stop_at: int | None = None,
    precision: str = "fp32",
    validator: RerankValidation | None = None,
    overrides: tuple[str, ...] = ("trainer.checkpoint_every=1",),
) -> Trained:
    """Train the tiny model on the tiny collection, recording the training losses and validation values."""
    cfg = compose_config(*TINY, f"trainer.max_steps={max_steps}", *overrides)
    register_all(cfg.data.register)
    seed_everything(cfg.seed)
    model = instantiate(cfg.model)
    losses: list[float] = []
    validations: list[float] = []

    def record(metrics: dict[str, float], step: int) -> None:
        losses.extend(v for k, v in metrics.items() if k == "train/loss")
        validations.extend(v for k, v in metrics.items() if k.startswith("val/") or k == "train/epoch_loss")
        if step == stop_at:
            raise Interrupted

    result = train(
        model,
        instantiate(cfg.loss),
        instantiate(cfg.data.train),
        instantiate(cfg.optim),
        instantiate(cfg.scheduler),
        TrainerSettings(**cfg.trainer),
        Hardware(precision=precision),
        checkpoints,
        record,
        validator,
    )
    return Trained(model, result, losses, validations)


def test_resume_continues_exactly_where_it_stopped(tmp_path: Path) -> None:
    straight = run_training(tmp_path / "straight", max_steps=5).model
    with pytest.raises(Interrupted):
        run_training(tmp_path / "resumed", max_steps=5, stop_at=2)
    resumed_run = run_training(tmp_path / "resumed", max_steps=5)
    resumed = resumed_run.model
    assert len(resumed_run.losses) == 4  # interrupted before step 2 was checkpointed: steps 2-5 run again
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_loss_goes_down_on_repeated_data(tmp_path: Path) -> None:
    losses = run_training(tmp_path, max_steps=12).losses
    assert sum(losses[-3:]) < sum(losses[:3])


def test_bf16_autocast_trains(tmp_path: Path) -> None:
    trained = run_training(tmp_path, max_steps=2, precision="bf16")
    assert len(trained.losses) == 2 and all(torch.isfinite(torch.tensor(trained.losses)))
    assert all(p.dtype == torch.float32 for p in trained.model.parameters())  # autocast keeps fp32 master weights
