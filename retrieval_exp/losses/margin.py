"""Margin regression losses of self-distillation with adaptive relevance margins (Gienapp et al., ICTIR 2025;
arXiv 2407.21515; code: webis-de/adaptive-relevance-margin-loss, src/loss.py).

The margin of a triple is m = cos(q, d+) - cos(q, d-); the loss regresses it onto a target through an error function
(l2: e^2, l1: |e|, soft: log(1 + exp(-e))) and averages. The losses differ by target:

* static      t = c, a constant;
* adaptive    t = cos(d+, d-) / 2 + 0.5, from the encoder being trained, at the same step (self-distillation: no
              teacher; the more alike d+ and d-, the larger the margin asked for);
* distributed the adaptive target of every positive in the batch against each negative (see DistributedMargin).

Similarities are cosines whatever the model's normalisation. With k negatives per query, each of them is a margin of
its own. With `in_batch`, query i's margin is taken against every negative j of the batch:
m[i, j] = cos(q_i, d+_i) - cos(q_i, d-_j), with the adaptive target cos(d+_i, d-_j) / 2 + 0.5 (`in_batch_form:
paper`, the default: both terms belong to query i). The authors' code writes `pos.diag() - neg`, which broadcasts to
m[i, j] = cos(q_j, d+_j) - cos(q_i, d-_j), the positive of the negative's own query; their "with in-batch" runs used
that form, which `in_batch_form: authors` reproduces.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable

import torch
import torch.nn.functional as F

from retrieval_exp.batches import BatchShape, TripleBatch, TripleEmbeddings
from retrieval_exp.errors import UserError
from retrieval_exp.interfaces import ModelKind
from retrieval_exp.losses.base import Loss
from retrieval_exp.settings import NonNegativeFloat

ERROR_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "l2": torch.square,
    "l1": torch.abs,
    "soft": lambda error: F.softplus(-error),
}


IN_BATCH_FORMS = ("paper", "authors")


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarities of the rows of a (n, h) and b (m, h): (n, m)."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


class MarginLoss(Loss):
    """Shared part: margins, error function and mean; subclasses give the target."""

    batch_shape = BatchShape.TRIPLES
    model_kinds = (ModelKind.BI_ENCODER,)

    def __init__(
        self,
        in_batch: bool = False,
        error_fn: str = "l2",
        mask_false_negatives: bool = True,
        in_batch_form: str = "paper",
    ) -> None:
        if error_fn not in ERROR_FUNCTIONS:
            raise UserError(f"loss.error_fn={error_fn!r} is not one of {', '.join(ERROR_FUNCTIONS)}")
        if in_batch_form not in IN_BATCH_FORMS:
            raise UserError(f"loss.in_batch_form={in_batch_form!r} is not one of {', '.join(IN_BATCH_FORMS)}")
        self.in_batch, self.error = in_batch, ERROR_FUNCTIONS[error_fn]
        self.mask_false_negatives, self.in_batch_form = mask_false_negatives, in_batch_form

    def margins(self, output: TripleEmbeddings) -> torch.Tensor:
        """(B, k) margins against each query's own negatives, or (B, B*k) against all with `in_batch`."""
        positive = F.cosine_similarity(output.queries, output.positives, dim=-1).unsqueeze(1)
        if self.in_batch:
            if self.in_batch_form == "authors":  # each negative's own query's positive
                positive = positive.T.repeat_interleave(output.negatives.shape[1], dim=1)
            return positive - cosine(output.queries, output.negatives.flatten(0, 1))
        own = F.cosine_similarity(output.queries.unsqueeze(1), output.negatives, dim=-1)
        return positive - own

    @abstractmethod
    def targets(self, output: TripleEmbeddings) -> torch.Tensor | float:
        """The target of each margin (broadcastable to the margins)."""

    def compute_loss(self, output: TripleEmbeddings, batch: TripleBatch) -> torch.Tensor:
        errors = self.error(self.margins(output) - self.targets(output))
        mask = batch.not_negatives(self.in_batch) if self.mask_false_negatives else None
        if mask is None:
            return errors.mean()
        size = output.queries.shape[0]
        negatives = mask[:, size:] if self.in_batch else mask[:, 1:]  # the margins' columns
        return errors[~negatives].mean()


class StaticMargin(MarginLoss):
    """Constant target margin c (the authors' static baseline; the paper tunes c per encoder)."""

    name = "static_margin"

    def __init__(
        self,
        margin: NonNegativeFloat = 0.3,
        in_batch: bool = False,
        error_fn: str = "l2",
        mask_false_negatives: bool = True,
        in_batch_form: str = "paper",
    ) -> None:
        super().__init__(in_batch, error_fn, mask_false_negatives, in_batch_form)
        self.margin = margin

    def targets(self, output: TripleEmbeddings) -> float:
        return self.margin


def adaptive_targets(output: TripleEmbeddings, in_batch: bool, detach: bool) -> torch.Tensor:
    """cos(d+, d-) / 2 + 0.5 for every margin: (B, k), or (B, B*k) with `in_batch`; `detach` stops its gradient."""
    if in_batch:
        similarity = cosine(output.positives, output.negatives.flatten(0, 1))
    else:
        similarity = F.cosine_similarity(output.positives.unsqueeze(1), output.negatives, dim=-1)
    targets = similarity / 2 + 0.5
    return targets.detach() if detach else targets


class AdaptiveMargin(MarginLoss):
    """Target margin from the document-document similarity of the same encoder at the same step. As in the authors'
    code the target is not detached, so gradients also flow through cos(d+, d-); `detach_target` is our ablation."""

    name = "adaptive_margin"

    def __init__(
        self,
        in_batch: bool = False,
        error_fn: str = "l2",
        detach_target: bool = False,
        mask_false_negatives: bool = True,
        in_batch_form: str = "paper",
    ) -> None:
        super().__init__(in_batch, error_fn, mask_false_negatives, in_batch_form)
        self.detach_target = detach_target

    def targets(self, output: TripleEmbeddings) -> torch.Tensor:
        return adaptive_targets(output, self.in_batch, self.detach_target)


class DistributedMargin(MarginLoss):
    """The authors' third variant: each query's own margin m_j is regressed onto the adaptive target of *every*
    positive of the batch against its negative, e[i, j] = m_j - (cos(d+_i, d-_j) / 2 + 0.5), the broadcasting of their
    code. Under l2 this is (m_j - mean_i t_ij)^2 + Var_i(t_ij): the effective target of negative j is its mean
    similarity to all positives in the batch. In-batch negatives are not defined for it."""

    name = "distributed_margin"

    def __init__(self, in_batch: bool = False, error_fn: str = "l2", detach_target: bool = False) -> None:
        if in_batch:
            raise UserError("loss distributed_margin does not support in_batch=true (neither does the authors' code)")
        super().__init__(False, error_fn, mask_false_negatives=False)  # its errors pair other rows' positives
        self.detach_target = detach_target

    def margins(self, output: TripleEmbeddings) -> torch.Tensor:
        return super().margins(output).flatten().unsqueeze(0)  # (1, B*k), broadcast over the B positives

    def targets(self, output: TripleEmbeddings) -> torch.Tensor:
        return adaptive_targets(output, in_batch=True, detach=self.detach_target)  # (B, B*k)
