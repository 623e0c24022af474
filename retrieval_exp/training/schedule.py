"""Learning-rate schedules: linear warmup, then a decay."""

from __future__ import annotations

import math
from typing import Annotated

import torch

from retrieval_exp.errors import UserError
from retrieval_exp.settings import AtLeast, PositiveFloat

DECAYS = ("linear", "cosine", "constant", "exponential")


def warmup_decay(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup: Annotated[float, AtLeast(0)] = 0.1,
    decay: str = "linear",
    gamma: PositiveFloat = 0.99999,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Scale the lr by step/warmup_steps during warmup, then decay it to 0 (linear, cosine), keep it (constant) or
    multiply it by `gamma` each step (exponential, as the self-distillation paper). `warmup` < 1 is a fraction of
    `total_steps`, otherwise a step count."""
    if decay not in DECAYS:
        raise UserError(f"scheduler.decay={decay!r} is not one of {', '.join(DECAYS)}")
    warmup_steps = round(warmup * total_steps) if warmup < 1 else int(warmup)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        if decay == "linear":
            return max(0.0, 1.0 - progress)
        if decay == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        if decay == "exponential":
            return gamma ** (step - warmup_steps)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
