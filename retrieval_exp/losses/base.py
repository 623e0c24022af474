"""The loss interface (after lightning-ir's `compute_loss(output, batch)`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from retrieval_exp.batches import BatchShape
from retrieval_exp.interfaces import ModelKind


class Loss(ABC):
    """A training objective. Subclasses declare (as class attributes) the batch shape they consume and the model
    kinds they train, so that a config pairing them wrongly fails at start-up; a loss made of parts (WeightedSum)
    derives them from its parts. `needs_teacher`: the batches must carry teacher scores. A loss made of parts
    reassigns `terms` in each `compute_loss` (never mutates it).

    `output` is the model's training output and `batch` its collated batch, both of `batch_shape` (batches.py):
    TripleEmbeddings and TripleBatch, ListScores and ListBatch, or ChunkGroupOutput and ChunkGroupBatch."""

    name: str
    batch_shape: BatchShape
    model_kinds: tuple[ModelKind, ...]
    needs_teacher: bool = False
    terms: dict[str, torch.Tensor] = {}  # a composite loss's detached parts in the last batch, logged as train/<name>

    @abstractmethod
    def compute_loss(self, output: Any, batch: Any) -> torch.Tensor:
        """A scalar to minimise, from the model's output for `batch`."""
