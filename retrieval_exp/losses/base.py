"""The loss interface (after lightning-ir's `compute_loss(output, batch)`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from retrieval_exp.batches import BatchShape


class Loss(ABC):
    """A training objective. Subclasses declare the batch shape they consume and the model kinds they train,
    so that a config pairing them wrongly fails at start-up. `needs_teacher`: the batches must carry teacher scores.
    A loss made of parts reassigns `terms` in each `compute_loss` (never mutates it)."""

    name: ClassVar[str]
    batch_shape: ClassVar[BatchShape]
    model_kinds: ClassVar[tuple[str, ...]]
    needs_teacher: ClassVar[bool] = False
    terms: dict[str, torch.Tensor] = {}  # a composite loss's detached parts in the last batch, logged as train/<name>

    @abstractmethod
    def compute_loss(self, output: Any, batch: Any) -> torch.Tensor:
        """A scalar to minimise, from the model's output for `batch`."""
