"""Revela's in-batch attention as a transformers attention implementation, without forking transformers.

`use_inbatch_attention(lm)` switches a Llama- or Qwen2-family model to the implementation registered here. It is
stock SDPA until a forward pass is given an `inbatch=InBatchState(...)` keyword, which transformers hands down to
every attention layer:

- recording (`weights` None, Revela's pass 1): each layer keeps its post-RoPE keys and values, per chunk;
- mixing (pass 2): each layer adds sum_j W_ij * U_ij to chunk i's causal output, where U_ij is chunk i's queries
  attending (non-causally) to all real tokens of chunk j's recorded keys and values, v-normed by default.

Pairs with W_ij == 0 are skipped: they add nothing to the output, and softmax sends no gradient to a weight that
is exactly zero, so skipping them is exact (with Revela's tau = 1e-4, W is close to one-hot).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

IMPLEMENTATION = "revela_inbatch"
V_NORM_EPS = 1e-6  # as in the authors' patched LlamaSdpaAttention


@dataclass
class InBatchState:
    """One forward pass's in-batch attention: record keys/values (weights None) or mix them in with `weights`
    (N, N), W_ij = how much chunk i attends to chunk j. `key_padding` (N, L): True at chunk j's real tokens."""

    key_padding: torch.Tensor
    weights: torch.Tensor | None = None
    v_norm: bool = True
    recorded: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def mixing(self, weights: torch.Tensor, v_norm: bool = True) -> InBatchState:
        """The pass-2 state: these recorded keys and values, mixed in with `weights`."""
        return InBatchState(self.key_padding, weights, v_norm, self.recorded)


def inbatch_output(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    key_padding: torch.Tensor,
    weights: torch.Tensor,
    scaling: float,
    v_norm: bool = True,
) -> torch.Tensor:
    """sum_j W_ij U_ij for every chunk i: (N, H, L, d) from queries (N, H, L, d), keys and values (N, H_kv, L', d)
    (grouped-query heads are repeated as transformers' repeat_kv does) and weights (N, N).

    U_ij = A_ij V_j with A_ij = softmax(Q_i K_j^T * scaling) over chunk j's real tokens; with `v_norm`, each row of
    U_ij is divided by A_ij ||V_j|| (+ 1e-6), the attention-weighted mean norm of the values it mixes.
    """
    heads, head_dim = queries.shape[1], queries.shape[-1]
    keys = keys.repeat_interleave(heads // keys.shape[1], dim=1)
    values = values.repeat_interleave(heads // values.shape[1], dim=1)
    if v_norm:  # one extra value column carries ||V_j||, so one attention call gives both A V and A ||V||
        values = torch.cat([values, values.norm(dim=-1, keepdim=True)], dim=-1)
    rows, cols = weights.nonzero(as_tuple=True)
    if rows.numel() == 0:
        return queries.new_zeros(queries.shape)
    mask = key_padding[cols][:, None, None, :]
    attended = F.scaled_dot_product_attention(
        queries[rows], keys[cols].to(queries.dtype), values[cols].to(queries.dtype), attn_mask=mask, scale=scaling
    )
    if v_norm:
        attended = attended[..., :head_dim] / (attended[..., head_dim:] + V_NORM_EPS)
    pair_weights = weights[rows, cols].to(attended.dtype)[:, None, None, None]
    mixed = attended.new_zeros(queries.shape)  # in attention's dtype: bf16 under autocast, whatever the queries'
    return mixed.index_add(0, rows, pair_weights * attended)


def attention(
    module: Any,  # a transformers attention layer (its layer_idx and scaling)
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    inbatch: InBatchState | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SDPA attention, plus recording or mixing when the forward pass carries an InBatchState."""
    output, attention_weights = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if inbatch is None:
        return output, attention_weights
    layer = module.layer_idx
    if inbatch.weights is None:  # a recomputation (gradient checkpointing) keeps the first recording
        inbatch.recorded.setdefault(layer, (key, value))
        return output, attention_weights
    keys, values = inbatch.recorded[layer]
    mixed = inbatch_output(query, keys, values, inbatch.key_padding, inbatch.weights, module.scaling, inbatch.v_norm)
    return output + mixed.transpose(1, 2).to(output.dtype), attention_weights  # SDPA's output is (N, L, H, d)


AttentionInterface.register(IMPLEMENTATION, attention)
AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


def use_inbatch_attention(lm: Any) -> Any:
    """Switch `lm` (a transformers causal LM, or a peft model around one) to in-batch attention; returns it."""
    lm.set_attn_implementation(IMPLEMENTATION)
    return lm
