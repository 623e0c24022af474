"""Losses that train a retriever with a language model's signal, over groups of chunks (docs/METHODS.md,
section 4)."""

from __future__ import annotations

import torch

from retrieval_exp.batches import BatchShape, ChunkGroupBatch, ChunkGroupOutput
from retrieval_exp.errors import UserError
from retrieval_exp.interfaces import ModelKind
from retrieval_exp.losses.base import Loss
from retrieval_exp.settings import Positive, PositiveFloat


class RevelaLoss(Loss):
    """Revela (Cai et al., 2025): the LM's next-token loss when every chunk also attends to the other chunks of its
    group with weights W = softmax(cos(query_i, passage_j) / temperature), W_ii = 0.

    The retriever's only gradient is through W. With `candidates` = k, each row of W covers the chunk's k most
    similar chunks only (the others 0), so the in-batch attention costs N x k chunk pairs instead of N^2; nothing
    is lost where the rest of W underflows to 0 anyway (tau = 1e-4 with a retriever whose similarities spread).
    `dual_loss` adds the plain pass's LM loss (the authors' option, off by default); the plain loss is always logged
    (train/lm_plain) beside train/lm_inbatch, so a run shows whether attending across the group helps the LM.
    """

    name = "revela"
    batch_shape = BatchShape.CHUNK_GROUPS
    model_kinds = (ModelKind.REVELA,)

    def __init__(
        self,
        temperature: PositiveFloat = 1e-4,
        candidates: Positive | None = None,
        v_norm: bool = True,
        dual_loss: bool = False,
    ) -> None:
        self.temperature, self.candidates, self.v_norm, self.dual_loss = temperature, candidates, v_norm, dual_loss

    def attention_weights(self, similarities: torch.Tensor) -> torch.Tensor:
        """W: each row's softmax over its allowed (finite) similarities, its best `candidates` when set."""
        if self.candidates:
            kth = similarities.topk(min(self.candidates, similarities.shape[-1]), dim=-1).values[:, -1:]
            similarities = similarities.masked_fill(similarities < kth, float("-inf"))
        return torch.softmax(similarities / self.temperature, dim=-1)

    def compute_loss(self, output: ChunkGroupOutput, batch: ChunkGroupBatch) -> torch.Tensor:
        weights = self.attention_weights(output.similarities)
        mixed, plain = output.lm_losses(weights, self.v_norm)
        self.terms = {"lm_inbatch": mixed.detach(), "lm_plain": plain.detach()}
        return mixed + plain if self.dual_loss else mixed


class ReplugLoss(Loss):
    """REPLUG LSR (Shi et al., 2023) on chunk groups, the Revela paper's baseline: for the query of chunk i (its
    first half), the retriever's distribution over its `candidates` best chunks of the group, P_R = softmax(cos /
    temperature), is pulled towards the frozen LM's, Q = softmax(log P_LM(second half of i | chunk j,
    first half of i) / lm_temperature), by KL(P_R || Q), averaged over chunks."""

    name = "replug"
    batch_shape = BatchShape.CHUNK_GROUPS
    model_kinds = (ModelKind.REVELA,)

    def __init__(
        self, candidates: Positive = 4, temperature: PositiveFloat = 0.1, lm_temperature: PositiveFloat = 1.0
    ) -> None:
        self.candidates = candidates
        self.temperature, self.lm_temperature = temperature, lm_temperature

    def compute_loss(self, output: ChunkGroupOutput, batch: ChunkGroupBatch) -> torch.Tensor:
        best = output.similarities.topk(self.candidates, dim=-1)
        if best.values.isinf().any():
            raise UserError(
                f"loss.candidates={self.candidates} is not below the chunks per group: lower it or use larger groups"
            )
        retriever = torch.log_softmax(best.values / self.temperature, dim=-1)
        lm = torch.log_softmax(output.continuation_log_likelihoods(best.indices) / self.lm_temperature, dim=-1)
        return (retriever.exp() * (retriever - lm)).sum(-1).mean()
