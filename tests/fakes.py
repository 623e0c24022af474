"""Losses that no shipped config pairs with a bi-encoder and triples: they exercise the start-up pairing check."""

from __future__ import annotations

from typing import Any

import torch

from retrieval_exp.batches import BatchShape
from retrieval_exp.losses.base import Loss
from retrieval_exp.models.bi_encoder import TripleBatch

UNMASKED = TripleBatch(None, None, 0)  # type: ignore[arg-type]  # a batch without false negatives, for losses' tests


class CrossEncoderOnlyLoss(Loss):
    name = "cross_encoder_only"
    batch_shape = BatchShape.TRIPLES
    model_kinds = ("cross_encoder",)

    def __init__(self, **preset: Any) -> None:  # takes the settings of the preset loss it stands in for
        self.preset = preset

    def compute_loss(self, output: Any, batch: Any) -> torch.Tensor:
        raise AssertionError("never trained: the config check must stop it first")


class RankedListLoss(CrossEncoderOnlyLoss):
    name = "ranked_list"
    batch_shape = BatchShape.RANKED_LISTS
    model_kinds = ("bi_encoder",)
