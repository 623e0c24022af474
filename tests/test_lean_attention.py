"""Lean CPU attention with dropout and activation checkpointing: the same masks, outputs and gradients as SDPA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from retrieval_exp.hardware import Hardware
from retrieval_exp.models import lean_attention
from retrieval_exp.models.bi_encoder import BiEncoder
from retrieval_exp.models.hub import load_encoder
from retrieval_exp.models.lean_attention import IMPLEMENTATION, LeanDropoutAttention

apply = LeanDropoutAttention.apply


def padding_mask(batch: int, length: int) -> torch.Tensor:
    """(B, 1, L, L) True where a key is a real token; rows 1 and 3 are padded."""
    mask = torch.ones(batch, 1, length, length, dtype=torch.bool)
    mask[1, ..., 5:] = False
    mask[3, ..., 2:] = False
    return mask


@pytest.mark.parametrize("with_mask", [False, True])
def test_equals_sdpa_with_dropout_under_one_seed(monkeypatch: pytest.MonkeyPatch, with_mask: bool) -> None:
    monkeypatch.setattr(lean_attention, "SLICE_ELEMENTS", 2 * 3 * 7 * 7)  # slices of two batch rows, one partial
    torch.manual_seed(1)
    query, key, value = (torch.randn(5, 3, 7, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = padding_mask(5, 7) if with_mask else None
    upstream = torch.randn(5, 3, 7, 4, dtype=torch.float64)
    results = []
    for attend in (
        lambda: F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.3),
        lambda: LeanDropoutAttention.apply(query, key, value, mask, 0.3, 4**-0.5),
    ):
        torch.manual_seed(7)
        output = attend()
        grads = torch.autograd.grad(output, (query, key, value), upstream)
        results.append((output, *grads, torch.rand(3)))  # the last: the RNG stream after the masks
    for lean, sdpa in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(lean, sdpa, rtol=0, atol=1e-12)
    assert not torch.equal(results[0][0], F.scaled_dot_product_attention(query, key, value, attn_mask=mask))


def train_step(model: BiEncoder, texts: list[str], seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A dropout-on forward and backward of a toy objective; the loss and every gradient."""
    model.train()
    model.zero_grad()
    torch.manual_seed(seed)
    embeddings = model(model.tokenize(texts, "doc"))
    loss = (embeddings @ embeddings.T).logsumexp(dim=-1).mean()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


TEXTS = ["the cat sat on the mat with a hat", "dogs", "a much longer text about retrieval and ranking of documents"]


def test_encoder_trains_to_the_same_numbers_with_lean_attention_and_checkpointing(
    tiny_bert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = BiEncoder(str(tiny_bert), dropout=0.2)
    assert model.encoder.config._attn_implementation == IMPLEMENTATION
    calls = []
    monkeypatch.setattr(LeanDropoutAttention, "apply", lambda *args: calls.append(1) or apply(*args))
    lean = train_step(model, TEXTS, seed=3)
    assert len(calls) == 2  # both layers took the lean path
    monkeypatch.undo()
    model.encoder.set_attn_implementation("sdpa")
    sdpa = train_step(model, TEXTS, seed=3)
    Hardware(activation_checkpointing=True).for_training(model)
    assert model.encoder.is_activation_checkpointing
    checkpointed = train_step(model, TEXTS, seed=3)
    other_seed = train_step(model, TEXTS, seed=4)
    for result in (lean, checkpointed):
        torch.testing.assert_close(result[0], sdpa[0])
        for got, expected in zip(result[1], sdpa[1], strict=True):
            torch.testing.assert_close(got, expected)
    assert not torch.allclose(other_seed[0], sdpa[0])  # dropout is on: the seed decides the masks


def test_checkpointing_leaves_a_frozen_model_alone(tiny_bert: Path) -> None:
    frozen = load_encoder(str(tiny_bert)).requires_grad_(False)
    assert not Hardware(activation_checkpointing=True).for_training(frozen).is_activation_checkpointing


def test_saved_folder_names_no_implementation(tiny_bert: Path, tmp_path: Path) -> None:
    load_encoder(str(tiny_bert), dropout=0.1).save_pretrained(tmp_path)
    assert "attn" not in " ".join(json.loads((tmp_path / "config.json").read_text()))
