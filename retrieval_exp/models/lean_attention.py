"""Attention with dropout that keeps O(L) memory per head on the CPU, as a transformers attention implementation.

On CUDA, SDPA's fused kernels apply attention dropout themselves. On the CPU they refuse dropout_p > 0, so every
BERT-style encoder trained with its checkpoint's attention dropout (0.1) takes SDPA's math path, which keeps four
(B, H, L, L) float tensors per layer for the backward pass: 800 MB a layer for 64 documents of 256 tokens, most of
the default run's peak. `lean_attention` keeps q, k, v, the row log-sum-exp and the dropout's keep mask as bools,
recomputes the probabilities in the backward pass a slice of the batch at a time (as flash attention does), and
draws the mask with the very call SDPA's math path makes (`bernoulli_(1 - p)` over the whole (B, H, L, L) shape),
so a seed gives the same masks and the same numbers as before, up to float rounding.

Everything else (no dropout, evaluation, no autograd, other devices, causal layers) is stock SDPA.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

IMPLEMENTATION = "retrieval_exp_lean"
SLICE_ELEMENTS = 1 << 24  # (batch slice, H, L, L) scores at a time: 64 MB of float32


def masked_scores(
    query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, scale: float, rows: slice
) -> torch.Tensor:
    """Q K^T * scale for the batch rows `rows`, with `mask` (bool: True attends; float: added) applied."""
    scores = torch.matmul(query[rows], key[rows].transpose(-1, -2)).mul_(scale)
    if mask is None:
        return scores
    part = mask if mask.shape[0] == 1 else mask[rows]
    return scores.masked_fill_(~part, float("-inf")) if part.dtype == torch.bool else scores.add_(part)


def batch_slices(query: torch.Tensor, key: torch.Tensor) -> list[slice]:
    """Slices of the batch whose scores hold about SLICE_ELEMENTS numbers."""
    batch, heads, length, key_length = query.shape[0], query.shape[1], query.shape[2], key.shape[2]
    step = max(1, SLICE_ELEMENTS // (heads * length * key_length))
    return [slice(start, start + step) for start in range(0, batch, step)]


def kept_scaled(keep: torch.Tensor, rows: slice, dropout: float, dtype: torch.dtype) -> torch.Tensor:
    """The keep mask of the batch rows `rows` as dropout's multiplier: 1 / (1 - p) where kept, else 0."""
    return keep[rows].to(dtype).mul_(1 / (1 - dropout))


class LeanDropoutAttention(torch.autograd.Function):
    """softmax(Q K^T * scale + mask) with dropout p, times V; saves no (L, L) float tensor for the backward pass."""

    @staticmethod
    def forward(
        ctx: Any,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None,
        dropout: float,
        scale: float,
    ) -> torch.Tensor:
        shape = (*query.shape[:-1], key.shape[-2])
        keep = torch.empty(shape, dtype=torch.bool, device=query.device).bernoulli_(1 - dropout)
        output = query.new_empty((*query.shape[:-1], value.shape[-1]))
        log_sum_exp = query.new_empty(query.shape[:-1] + (1,))
        for rows in batch_slices(query, key):
            scores = masked_scores(query, key, mask, scale, rows)
            row_max = scores.amax(dim=-1, keepdim=True)
            row_sums = scores.sub_(row_max).exp_().sum(dim=-1, keepdim=True)
            log_sum_exp[rows] = row_max + row_sums.log()
            dropped = scores.mul_(kept_scaled(keep, rows, dropout, scores.dtype)).div_(row_sums)
            output[rows] = torch.matmul(dropped, value[rows])
        ctx.save_for_backward(query, key, value, mask, log_sum_exp, keep, output)
        ctx.dropout, ctx.scale = dropout, scale
        return output

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        query, key, value, mask, log_sum_exp, keep, output = ctx.saved_tensors
        row_sums = (grad_output * output).sum(dim=-1, keepdim=True)  # rowsum(dP * P) without an (L, L) product
        grads = torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)
        for rows in batch_slices(query, key):
            probabilities = masked_scores(query, key, mask, ctx.scale, rows).sub_(log_sum_exp[rows]).exp_()
            kept = kept_scaled(keep, rows, ctx.dropout, probabilities.dtype)
            grads[2][rows] = torch.matmul((probabilities * kept).transpose(-1, -2), grad_output[rows])
            grad_dropped = torch.matmul(grad_output[rows], value[rows].transpose(-1, -2)).mul_(kept)
            del kept
            grad_scores = grad_dropped.sub_(row_sums[rows]).mul_(probabilities).mul_(ctx.scale)
            grads[0][rows] = torch.matmul(grad_scores, key[rows])
            grads[1][rows] = torch.matmul(grad_scores.transpose(-1, -2), query[rows])
        return *grads, None, None, None


def lean_attention(
    module: Any,  # a transformers attention layer
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """LeanDropoutAttention where SDPA would take its math path for dropout (CPU, autograd on, bidirectional,
    one key head per query head), else SDPA. Returns transformers' (B, L, H, d) layout."""
    lean = dropout > 0 and query.device.type == "cpu" and torch.is_grad_enabled()
    lean = lean and not (getattr(module, "is_causal", False) or kwargs.get("is_causal"))
    lean = lean and kwargs.get("position_bias") is None and key.shape[1] == query.shape[1]
    if not lean:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    output = LeanDropoutAttention.apply(query, key, value, attention_mask, dropout, scale)
    return output.transpose(1, 2).contiguous(), None


AttentionInterface.register(IMPLEMENTATION, lean_attention)
AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


def use_lean_attention(model: Any) -> Any:
    """Switch `model` (a transformers encoder using SDPA) to lean_attention; other implementations are kept."""
    if model.config._attn_implementation == "sdpa":
        model.set_attn_implementation(IMPLEMENTATION)
    return model
