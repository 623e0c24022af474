"""Losses that no shipped config pairs with a bi-encoder and triples: they exercise the start-up pairing check."""

from __future__ import annotations

from typing import Any

import torch

from retrieval_exp.batches import BatchShape, TripleBatch
from retrieval_exp.interfaces import ModelKind
from retrieval_exp.losses.base import Loss

UNMASKED = TripleBatch(None, None, 0)  # type: ignore[arg-type]  # a batch without false negatives, for losses' tests


class CrossEncoderOnlyLoss(Loss):
    name = "cross_encoder_only"
    batch_shape = BatchShape.TRIPLES
    model_kinds = (ModelKind.CROSS_ENCODER,)

    def __init__(self, **preset: Any) -> None:  # takes the settings of the preset loss it stands in for
        self.preset = preset

    def compute_loss(self, output: Any, batch: Any) -> torch.Tensor:
        raise AssertionError("never trained: the config check must stop it first")


class BiEncoderListLoss(CrossEncoderOnlyLoss):
    """Trains bi-encoders, but on ranked lists, which no bi-encoder sampler makes."""

    name = "bi_encoder_lists"
    batch_shape = BatchShape.RANKED_LISTS
    model_kinds = (ModelKind.BI_ENCODER,)
