"""Early-stopping bookkeeping shared by the stopping rules: the best value so far, where it was, and how many updates
have not improved on it (saved with each checkpoint, so a resumed run stops where an uninterrupted one would)."""

from __future__ import annotations

from typing import Any

import torch


class Patience:
    """`patience` updates without improvement exhaust it; `lower_is_better` for losses. `watched` names the value."""

    watched = "value"

    def __init__(self, patience: int, lower_is_better: bool = False) -> None:
        self.patience, self.lower_is_better = patience, lower_is_better
        self.best: float | None = None
        self.best_step = 0
        self.bad_updates = 0

    def update(self, value: float, step: int) -> bool:
        """Record a value; True when it is the best so far."""
        improved = self.best is None or (value < self.best if self.lower_is_better else value > self.best)
        if improved:
            self.best, self.best_step, self.bad_updates = value, step, 0
        else:
            self.bad_updates += 1
        return improved

    @property
    def exhausted(self) -> bool:
        return self.bad_updates >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "bad_updates": self.bad_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_step, self.bad_updates = state["best"], state["best_step"], state["bad_updates"]


class TrainingLossStop(Patience):
    """The hybrid-KD authors' rule (trainer.loss_patience): stop when the epoch's mean training loss has not improved
    for `patience` epochs; the best epoch's weights are kept. `total` sums the epoch's step losses so far."""

    watched = "epoch training loss"

    def __init__(self, patience: int) -> None:
        super().__init__(patience, lower_is_better=True)
        self.total = torch.zeros(())

    def add(self, step_loss: torch.Tensor) -> None:
        self.total = self.total.to(step_loss.device) + step_loss.detach()

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"total": self.total.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.total = state["total"]
