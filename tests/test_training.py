"""The training loop: schedule shape, loss going down, resume continuing at the exact step, and a diverged run
stopped at its step."""

import json
import platform
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from retrieval_exp import hardware
from retrieval_exp.data.local import register_all
from retrieval_exp.hardware import Hardware, seed_everything
from retrieval_exp.training.distributed import SINGLE_PROCESS
from retrieval_exp.training.loop import TrainerSettings, TrainingDiverged, TrainingResult, _require_finite, train
from retrieval_exp.training.schedule import warmup_decay
from retrieval_exp.training.validation import Validation
from tests.conftest import REPO, TINY, compose_config, launch
from tests.test_launch import runs


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
    validator: Validation | None = None,
    overrides: tuple[str, ...] = ("trainer.checkpoint_every=1",),
    trim_host_memory: bool = False,
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
        Hardware(precision=precision, trim_host_memory=trim_host_memory),
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


def test_the_tiny_training_follows_its_pinned_loss_curve(tmp_path: Path) -> None:
    """A change to the loop, the sampler's order, the collation or a loss that changes what trains fails here
    (torchtune's recipe tests). The file says when to regenerate it; it is kept out of tests/data, whose words make
    the tiny model's vocabulary."""
    pinned = json.loads((REPO / "tests" / "pinned" / "tiny_loss_curve.json").read_text())["losses"]
    assert run_training(tmp_path, max_steps=len(pinned), overrides=()).losses == pytest.approx(pinned, rel=1e-4)


def test_loss_goes_down_on_repeated_data(tmp_path: Path) -> None:
    losses = run_training(tmp_path, max_steps=12).losses
    assert sum(losses[-3:]) < sum(losses[:3])


def test_bf16_autocast_trains(tmp_path: Path) -> None:
    trained = run_training(tmp_path, max_steps=2, precision="bf16")
    assert len(trained.losses) == 2 and all(torch.isfinite(torch.tensor(trained.losses)))
    assert all(p.dtype == torch.float32 for p in trained.model.parameters())  # autocast keeps fp32 master weights


@pytest.mark.parametrize("trim", [False, True])
def test_each_step_gives_its_freed_host_memory_back_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trim: bool
) -> None:
    if platform.libc_ver()[0] == "glibc":
        assert hardware.MALLOC_TRIM is not None
    calls: list[int] = []
    monkeypatch.setattr(hardware, "MALLOC_TRIM", calls.append)
    run_training(tmp_path, max_steps=3, trim_host_memory=trim)
    assert calls == ([0, 0, 0] if trim else [])


def test_a_diverged_loss_stops_the_run_at_its_step_with_one_line_and_no_result(tmp_path: Path) -> None:
    # cosines / 1e-45 overflow float32: the in-batch logits are inf and the loss is nan from the first step
    done = launch(tmp_path, "trainer.max_steps=3", "loss.temperature=1e-45")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line == (
        "error: training diverged at step 1: loss nan, gradient norm nan; lower optim.lr or check the loss's settings "
        "(loss.temperature, ...)"
    )
    [run] = runs(tmp_path)
    assert run.info.status == "FAILED" and run.data.tags["error"].startswith("TrainingDiverged: training diverged")
    assert not (tmp_path / "run" / "metrics.json").exists() and not (tmp_path / "run" / "model").exists()


def test_a_non_finite_loss_or_gradient_norm_is_named_with_the_loss_terms() -> None:
    cpu, inf = torch.device("cpu"), torch.tensor(float("inf"))
    terms = {"contrastive": torch.tensor(1.5), "regression": inf}
    with pytest.raises(TrainingDiverged, match=r"^training diverged at step 4: loss inf, contrastive 1.5, regression "
                       r"inf; lower optim.lr, set trainer.max_grad_norm or check"):  # fmt: skip
        _require_finite(4, inf, None, terms, SINGLE_PROCESS, cpu)
    with pytest.raises(TrainingDiverged, match=r"step 2: loss 0.5, gradient norm inf; lower optim.lr or check"):
        _require_finite(2, torch.tensor(0.5), inf, {}, SINGLE_PROCESS, cpu)
    finite = terms | {"regression": torch.tensor(0.1)}
    _require_finite(2, torch.tensor(0.5), torch.tensor(3.0), finite, SINGLE_PROCESS, cpu)  # finite: nothing raised
