"""Revela's in-batch attention extension on a tiny Llama: stock transformers when inactive, the paper's formula when
mixing, checked against hand-computed values."""

import math
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

from retrieval_exp.models.inbatch_attention import InBatchState, inbatch_output, use_inbatch_attention


def tiny_llama(implementation: str | None = None) -> torch.nn.Module:
    lm = AutoModelForCausalLM.from_pretrained(os.environ["RETRIEVAL_EXP_TINY_LLAMA"], attn_implementation="sdpa")
    return (use_inbatch_attention(lm) if implementation else lm).eval()


def tokens() -> dict[str, torch.Tensor]:
    ids = torch.randint(4, 40, (3, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_inactive_and_recording_passes_give_stock_logits() -> None:
    stock = tiny_llama()(**tokens()).logits
    lm = tiny_llama("inbatch")
    state = InBatchState(key_padding=tokens()["attention_mask"].bool())
    assert torch.equal(lm(**tokens()).logits, stock)
    assert torch.equal(lm(**tokens(), inbatch=state).logits, stock)
    assert sorted(state.recorded) == [0, 1] and state.recorded[0][0].shape == (3, 2, 7, 8)  # (N, kv heads, L, d)


def tiny_qwen2() -> torch.nn.Module:
    config = Qwen2Config(
        vocab_size=40,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).eval()


def test_qwen2_family_is_supported_too() -> None:
    lm = tiny_qwen2()
    stock = lm(**tokens()).logits
    use_inbatch_attention(lm)
    state = InBatchState(key_padding=tokens()["attention_mask"].bool())
    assert torch.equal(lm(**tokens(), inbatch=state).logits, stock)
    assert torch.equal(lm(**tokens(), inbatch=state.mixing(torch.zeros(3, 3))).logits, stock)
    assert not torch.allclose(lm(**tokens(), inbatch=state.mixing(torch.eye(3).roll(1, 0))).logits, stock)


def test_zero_weights_leave_the_lm_unchanged_and_other_weights_change_it() -> None:
    lm = tiny_llama("inbatch")
    state = InBatchState(key_padding=tokens()["attention_mask"].bool())
    plain = lm(**tokens(), inbatch=state).logits
    assert torch.equal(lm(**tokens(), inbatch=state.mixing(torch.zeros(3, 3))).logits, plain)
    weights = torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5], [0.0, 1.0, 0.0]])
    assert not torch.allclose(lm(**tokens(), inbatch=state.mixing(weights)).logits, plain)


def hand_case() -> tuple[torch.Tensor, ...]:
    """Two chunks, one head, one query token, two key tokens of width 2; chunk 0 queries chunk 1 only."""
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 1, 1, 2)
    keys = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]]).view(2, 1, 2, 2)
    values = torch.tensor([[[5.0, 5.0], [5.0, 5.0]], [[2.0, 0.0], [0.0, 1.0]]]).view(2, 1, 2, 2)
    weights = torch.tensor([[0.0, 0.5], [0.0, 0.0]])
    return queries, keys, values, weights


@pytest.mark.parametrize("v_norm", [True, False])
def test_inbatch_output_matches_the_hand_computed_formula(v_norm: bool) -> None:
    queries, keys, values, weights = hand_case()
    padding = torch.ones(2, 2, dtype=torch.bool)
    mixed = inbatch_output(queries, keys, values, padding, weights, scaling=1.0, v_norm=v_norm)
    a = [math.e / (math.e + 1), 1 / (math.e + 1)]  # softmax([q.k1, q.k2]) = softmax([1, 0])
    attended = [2 * a[0], 1 * a[1]]  # A V
    norm = a[0] * 2 + a[1] * 1  # A ||V||, ||V|| = (2, 1)
    expected = [0.5 * x / (norm + 1e-6) if v_norm else 0.5 * x for x in attended]
    assert mixed[0, 0, 0].tolist() == pytest.approx(expected, rel=1e-6)
    assert torch.equal(mixed[1], torch.zeros(1, 1, 2))  # chunk 1's weights are all zero


def test_inbatch_output_under_bf16_autocast_is_in_attention_dtype() -> None:
    """Under autocast, attention runs in bf16 while the queries stay fp32 (bench/gpu_check.py found the mix)."""
    queries, keys, values, weights = hand_case()
    padding = torch.ones(2, 2, dtype=torch.bool)
    exact = inbatch_output(queries, keys, values, padding, weights, scaling=1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = inbatch_output(queries, keys, values, padding, weights, scaling=1.0)
    assert mixed.dtype == torch.bfloat16 and torch.allclose(mixed.float(), exact, atol=1e-2)


def test_padding_keys_of_the_attended_chunk_get_no_attention() -> None:
    queries, keys, values, weights = hand_case()
    padding = torch.tensor([[True, True], [True, False]])  # chunk 1's second token is padding
    mixed = inbatch_output(queries, keys, values, padding, weights, scaling=1.0, v_norm=True)
    assert mixed[0, 0, 0].tolist() == pytest.approx([0.5 * 2 / (2 + 1e-6), 0.0])  # V_1[0] / ||V_1[0]||, halved


def test_grouped_query_heads_share_their_key_value_head() -> None:
    torch.manual_seed(0)
    queries, keys, values = torch.randn(2, 4, 3, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    weights, padding = torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.ones(2, 5, dtype=torch.bool)
    mixed = inbatch_output(queries, keys, values, padding, weights, scaling=0.3, v_norm=False)
    attention = torch.softmax(queries[0, 3] @ keys[1, 1].T * 0.3, dim=-1)  # query head 3 uses kv head 3 // 2
    assert torch.allclose(mixed[0, 3], attention @ values[1, 1], atol=1e-6)
