"""Contrastive losses for bi-encoders."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from retrieval_exp.batches import BatchShape, TripleBatch, TripleEmbeddings
from retrieval_exp.interfaces import ModelKind
from retrieval_exp.losses.base import Loss
from retrieval_exp.settings import PositiveFloat


class InfoNCE(Loss):
    """InfoNCE (van den Oord et al., 2018) as DPR trains (Karpukhin et al., 2020): each query's softmax over its
    positive, its own hard negatives and, with `in_batch`, every other document of the batch.

    loss = mean_i -log softmax(s(q_i, .) / temperature)[d+_i], s = the model's similarity (cosine for
    normalised encoders). temperature 0.05 equals sentence-transformers' MultipleNegativesRankingLoss scale 20.

    `mask_false_negatives`: a candidate judged relevant to q_i, or identical to d+_i (another row of the same query,
    a document twice in the batch), leaves q_i's softmax instead of counting as its negative.
    """

    name = "infonce"
    batch_shape = BatchShape.TRIPLES
    model_kinds = (ModelKind.BI_ENCODER,)

    def __init__(
        self, temperature: PositiveFloat = 0.05, in_batch: bool = True, mask_false_negatives: bool = True
    ) -> None:
        self.temperature, self.in_batch, self.mask_false_negatives = temperature, in_batch, mask_false_negatives

    def compute_loss(self, output: TripleEmbeddings, batch: TripleBatch) -> torch.Tensor:
        queries, positives, negatives = output.queries, output.positives, output.negatives
        if self.in_batch:
            documents = torch.cat([positives, negatives.flatten(0, 1)])
            scores = queries @ documents.T
            targets = torch.arange(queries.shape[0], device=queries.device)
        else:
            own = torch.cat([positives.unsqueeze(1), negatives], dim=1)
            scores = torch.einsum("bh,bnh->bn", queries, own)
            targets = torch.zeros(queries.shape[0], dtype=torch.long, device=queries.device)
        mask = batch.not_negatives(self.in_batch) if self.mask_false_negatives else None
        if mask is not None:
            scores = scores.masked_fill(mask, float("-inf"))
        return F.cross_entropy(scores / self.temperature, targets)
