"""Losses over ranked lists (Rank-DistiLLM, docs/METHODS.md, section 2, the formulas as lightning-ir implements them).

Each consumes scores S (Q, N) of Q queries' N candidates and targets T (Q, N), higher = more relevant: a relevance
label, depth - rank + 1 for a teacher's ranking, or a teacher's score.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from retrieval_exp.batches import BatchShape, ListBatch, ListScores
from retrieval_exp.errors import UserError
from retrieval_exp.interfaces import ModelKind
from retrieval_exp.losses.base import Loss
from retrieval_exp.settings import PositiveFloat

DISCOUNTS = ("log2", "reciprocal", "none")


def ordered_pairs(targets: torch.Tensor) -> torch.Tensor:
    """(Q, N, N) mask of the pairs (q, i, j) with T[q, i] > T[q, j]: i should rank above j."""
    return targets.unsqueeze(-1) > targets.unsqueeze(-2)


def pairwise_margins(scores: torch.Tensor) -> torch.Tensor:
    """(Q, N, N): S[q, i] - S[q, j]."""
    return scores.unsqueeze(-1) - scores.unsqueeze(-2)


def mean_or_zero(values: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """The mean of `values`; a batch whose targets order no pair (all tied) gives 0, still attached to `scores`."""
    return values.mean() if values.numel() else scores.sum() * 0


class RankedListLoss(Loss):
    batch_shape = BatchShape.RANKED_LISTS
    model_kinds = (ModelKind.CROSS_ENCODER,)


class ListwiseInfoNCE(RankedListLoss):
    """InfoNCE over each query's own list (stage 1; lightning-ir's InfoNCE, formerly LocalizedContrastiveEstimation):
    mean_q -log softmax(S_q / temperature)[argmax T_q]; no other query's documents take part."""

    name = "listwise_infonce"

    def __init__(self, temperature: PositiveFloat = 1.0) -> None:
        self.temperature = temperature

    def compute_loss(self, output: ListScores, batch: ListBatch) -> torch.Tensor:
        return F.cross_entropy(output.scores / self.temperature, batch.targets.argmax(dim=-1))


class RankNet(RankedListLoss):
    """RankNet (Burges et al., 2005): mean over every pair with T_i > T_j of log(1 + exp(-temperature (S_i - S_j))).
    `temperature` multiplies the scores, as in lightning-ir; 100 distinct ranks give 4,950 pairs per query."""

    name = "ranknet"

    def __init__(self, temperature: PositiveFloat = 1.0) -> None:
        self.temperature = temperature

    def compute_loss(self, output: ListScores, batch: ListBatch) -> torch.Tensor:
        margins = pairwise_margins(output.scores)[ordered_pairs(batch.targets)]
        return mean_or_zero(F.softplus(-self.temperature * margins), output.scores)


class ApproxRankMSE(RankedListLoss):
    """ADR-MSE: MSE between the approximate rank r^_i = 1 + sum_{j != i} sigmoid((S_j - S_i) / temperature) and the
    target rank r_i (1 = best under T; ties by list position), each term weighted by 1/log2(r_i + 1) ("log2"),
    1/r_i ("reciprocal") or 1 ("none"); the mean runs over all Q x N entries."""

    name = "adr_mse"

    def __init__(self, temperature: PositiveFloat = 1.0, discount: str = "log2") -> None:
        if discount not in DISCOUNTS:
            raise UserError(f"loss.discount={discount!r} is not one of {', '.join(DISCOUNTS)}")
        self.temperature, self.discount = temperature, discount

    def compute_loss(self, output: ListScores, batch: ListBatch) -> torch.Tensor:
        above = torch.sigmoid(-pairwise_margins(output.scores) / self.temperature)  # [q, i, j] = sigma((S_j - S_i)/T)
        others = ~torch.eye(output.scores.shape[-1], dtype=torch.bool, device=above.device)
        approximate = 1 + (above * others).sum(-1)
        order = torch.argsort(batch.targets, dim=-1, descending=True, stable=True)
        target = torch.argsort(order, dim=-1).float() + 1
        error = (approximate - target).square()
        if self.discount == "log2":
            error = error / torch.log2(target + 1)
        elif self.discount == "reciprocal":
            error = error / target
        return error.mean()


class SupervisedMarginMSE(RankedListLoss):
    """Margin-MSE on the list's own targets: over the pairs with T_i > T_j, MSE(S_i - S_j, T_i - T_j)
    (lightning-ir's SupervisedMarginMSE; the 2024 version's clamp of the target margin at 0 is moot on these pairs)."""

    name = "supervised_margin_mse"

    def compute_loss(self, output: ListScores, batch: ListBatch) -> torch.Tensor:
        pairs = ordered_pairs(batch.targets)
        errors = pairwise_margins(output.scores)[pairs] - pairwise_margins(batch.targets)[pairs]
        return mean_or_zero(errors.square(), output.scores)
