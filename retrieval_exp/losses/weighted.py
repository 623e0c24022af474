"""A weighted sum of losses, as lightning-ir sums a module's loss functions: total = sum_k weight_k * loss_k."""

from __future__ import annotations

import operator
from collections.abc import Mapping
from functools import reduce
from typing import Any

import torch

from retrieval_exp.batches import BatchShape
from retrieval_exp.errors import UserError
from retrieval_exp.interfaces import ModelKind
from retrieval_exp.losses.base import Loss


def combined(parts: Mapping[str, Any]) -> tuple[BatchShape, tuple[ModelKind, ...], bool]:
    """The batch shape, model kinds and teacher need of a sum of `parts` (Loss classes or instances), or a
    UserError when they cannot train together."""
    if not parts:
        raise UserError("loss.parts is empty: give at least one {name: {_target_: ...}}")
    shapes = {part.batch_shape for part in parts.values()}
    if len(shapes) > 1:
        raise UserError(f"loss.parts need different batches ({', '.join(sorted(shapes))}): sum losses of one shape")
    first, *others = parts.values()
    kinds = tuple(kind for kind in first.model_kinds if all(kind in other.model_kinds for other in others))
    if not kinds:
        raise UserError("loss.parts train different kinds of model: sum losses for one kind")
    return shapes.pop(), kinds, any(part.needs_teacher for part in parts.values())


class WeightedSum(Loss):
    """sum_k weights[k] * parts[k] (weight 1 where not given); each part is logged as train/<name>."""

    def __init__(self, parts: Mapping[str, Loss], weights: Mapping[str, float] | None = None) -> None:
        self.batch_shape, self.model_kinds, self.needs_teacher = combined(parts)
        unknown = set(weights or {}) - set(parts)
        if unknown:
            raise UserError(f"loss.weights names {sorted(unknown)}, which are not in loss.parts {sorted(parts)}")
        self.parts = dict(parts)
        self.weights = {name: float((weights or {}).get(name, 1.0)) for name in parts}
        self.name = "+".join(parts)

    def compute_loss(self, output: Any, batch: Any) -> torch.Tensor:
        values = {name: part.compute_loss(output, batch) for name, part in self.parts.items()}
        self.terms = {name: value.detach() for name, value in values.items()}
        return reduce(operator.add, (self.weights[name] * value for name, value in values.items()))
