"""Revela's two models (docs/METHODS.md, section 4): a retriever, any bi-encoder of the suite, and a causal LM with
in-batch attention. The LM learns next-token prediction over groups of chunks while attending across the group
with the retriever's weights, so the LM loss trains the retriever; only the retriever is kept and evaluated.

The same pair serves the REPLUG baseline (loss=replug), which needs the LM's likelihood of one chunk's second half
given another chunk and its first half.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BatchEncoding

from retrieval_exp.batches import ChunkGroup, ChunkGroupBatch, ChunkGroupOutput, Tokens
from retrieval_exp.errors import UserError
from retrieval_exp.interfaces import ModelKind
from retrieval_exp.models.bi_encoder import BiEncoder, Side
from retrieval_exp.models.inbatch_attention import InBatchState, use_inbatch_attention

IGNORED = -100  # label of tokens the LM loss skips


class Revela(torch.nn.Module):
    """The retriever (a BiEncoder on `name_or_path` with the `retriever` settings) and the LM `lm`.

    LoRA (peft's LoraConfig keys, e.g. {r: 256, lora_alpha: 64, lora_dropout: 0.1, target_modules: [...]}) wraps
    either model when given; without it that model is fully trained, unless `freeze_lm`. Queries are the first
    `first_half_ratio` of each chunk's retriever tokens; the LM reads each chunk cut to `chunk_length` tokens.
    `lm_gradient_checkpointing` recomputes the LM's layers in the backward pass instead of keeping their
    activations (a trained LM keeps both passes' otherwise: 24 GiB and more for SmolLM2 on 16 x 157 tokens).
    Saving saves the retriever alone (LoRA merged), as a bi-encoder folder.
    """

    kind = ModelKind.REVELA

    def __init__(
        self,
        name_or_path: str,
        lm: str,
        retriever: Mapping[str, Any] | None = None,
        retriever_lora: Mapping[str, Any] | None = None,
        lm_lora: Mapping[str, Any] | None = None,
        freeze_lm: bool = False,
        chunk_length: int = 157,
        first_half_ratio: float = 0.5,
        lm_batch_size: int = 8,
        lm_gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if freeze_lm and lm_lora:
            raise UserError("model.freeze_lm=true trains no LM weights, so model.lm_lora has nothing to do: set one")
        self.retriever = BiEncoder(name_or_path, **(retriever or {}))
        if retriever_lora:
            self.retriever.encoder = _with_lora(self.retriever.encoder, retriever_lora)
        self.lm = use_inbatch_attention(AutoModelForCausalLM.from_pretrained(lm))
        self.lm.requires_grad_(not freeze_lm)
        if lm_lora:
            self.lm = _with_lora(self.lm, lm_lora)
        if lm_gradient_checkpointing:
            self.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.lm_tokenizer = AutoTokenizer.from_pretrained(lm)
        self.lm_tokenizer.padding_side = "right"
        self.lm_tokenizer.pad_token = self.lm_tokenizer.pad_token or self.lm_tokenizer.eos_token
        self.lm_prefix = self.lm_tokenizer("")["input_ids"]  # what the tokenizer adds before a text: BOS, or nothing
        self.chunk_length, self.first_half_ratio, self.lm_batch_size = chunk_length, first_half_ratio, lm_batch_size

    @property
    def lm_trains(self) -> bool:
        return any(p.requires_grad for p in self.lm.parameters())

    def collate(self, groups: Sequence[ChunkGroup]) -> ChunkGroupBatch:
        texts = [text for group in groups for text in group]
        tokenizer = self.retriever.tokenizer
        cut = self.retriever.lengths["doc"]
        halves = [_first_part(text, tokenizer, cut, self.first_half_ratio) for text in texts]
        chunks = self.lm_tokenizer(texts, add_special_tokens=False, max_length=self.chunk_length, truncation=True)
        lm_chunks = chunks["input_ids"]
        return ChunkGroupBatch(
            self.retriever.tokenize(halves, "query"),
            self.retriever.tokenize(texts, "doc"),
            self._pad([self.lm_prefix + ids for ids in lm_chunks]),
            lm_chunks,
            torch.tensor([index for index, group in enumerate(groups) for _ in group]),
        )

    def training_output(self, batch: ChunkGroupBatch) -> ChunkGroupOutput:
        similarities = self.retriever(batch.queries) @ self.retriever(batch.passages).T
        same_group = batch.group_of[:, None] == batch.group_of[None, :]
        itself = torch.eye(len(batch.group_of), dtype=torch.bool, device=similarities.device)
        return ChunkGroupOutput(similarities.masked_fill(~same_group | itself, float("-inf")), self, batch)

    def lm_losses(
        self, tokens: Tokens, weights: torch.Tensor, v_norm: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pass 1 records every layer's keys and values (without autograd when the LM is frozen: the retriever's
        gradient flows through the weights only); pass 2 mixes them in. Each is the mean next-token loss over all
        real tokens of all chunks."""
        labels = tokens["input_ids"].masked_fill(tokens["attention_mask"] == 0, IGNORED)
        state = InBatchState(key_padding=tokens["attention_mask"].bool())
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.lm_trains):
            plain = self.lm(**tokens, labels=labels, inbatch=state, use_cache=False).loss
        mixed = self.lm(**tokens, labels=labels, inbatch=state.mixing(weights, v_norm), use_cache=False).loss
        return mixed, plain

    @torch.no_grad()
    def continuation_log_likelihoods(self, chunks: list[list[int]], candidates: torch.Tensor) -> torch.Tensor:
        """Summed log-probability of chunk i's second half after chunk j and chunk i's first half, (N, k)."""
        sequences, labels = [], []
        for i, row in enumerate(candidates.tolist()):
            half = max(1, int(len(chunks[i]) * self.first_half_ratio))
            for j in row:
                context = self.lm_prefix + chunks[j] + chunks[i][:half]
                sequences.append(context + chunks[i][half:])
                labels.append([IGNORED] * len(context) + chunks[i][half:])
        scores = []
        for start in range(0, len(sequences), self.lm_batch_size):
            tokens = self._pad(sequences[start : start + self.lm_batch_size]).to(candidates.device)
            targets = self._pad(labels[start : start + self.lm_batch_size], IGNORED)["input_ids"].to(candidates.device)
            logits = self.lm(**tokens, use_cache=False).logits[:, :-1].float()
            targets = targets[:, 1:]
            picked = logits.log_softmax(-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            scores.append((picked * (targets != IGNORED)).sum(-1))
        return torch.cat(scores).view(candidates.shape)

    def _pad(self, rows: list[list[int]], value: int | None = None) -> BatchEncoding:
        """Right-pad token id rows (with the pad id, or `value`) into tensors with an attention mask."""
        padded = self.lm_tokenizer.pad({"input_ids": rows}, return_tensors="pt")
        if value is not None:
            padded["input_ids"] = padded["input_ids"].masked_fill(padded["attention_mask"] == 0, value)
        return padded

    def embed(
        self,
        texts: Sequence[str],
        side: Side,
        batch_size: int,
        autocast: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
    ) -> torch.Tensor:
        """The retriever's vectors: Revela is evaluated as the retriever it trains."""
        return self.retriever.embed(texts, side, batch_size, autocast)

    def fingerprint(self) -> str:
        """The retriever's: only it decides the vectors."""
        return self.retriever.fingerprint()

    def save(self, path: Path) -> None:
        """The retriever alone, LoRA merged into its weights, as a bi-encoder folder (load it with its model config,
        e.g. model=minilm model.name_or_path=<path>)."""
        from peft import PeftModel

        if isinstance(self.retriever.encoder, PeftModel):
            self.retriever.encoder = self.retriever.encoder.merge_and_unload()
        self.retriever.save(path)


def _with_lora(model: torch.nn.Module, settings: Mapping[str, Any]) -> torch.nn.Module:
    """`model` with LoRA adapters (peft), only they trainable."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(**settings))


def _first_part(text: str, tokenizer: Any, max_tokens: int, ratio: float) -> str:
    """The text of the first `ratio` of `text`'s tokens (of at most `max_tokens`), cut at a token boundary."""
    offsets = tokenizer(
        text, add_special_tokens=False, max_length=max_tokens, truncation=True, return_offsets_mapping=True
    )["offset_mapping"]
    if not offsets:
        return text
    return text[: offsets[max(1, int(len(offsets) * ratio)) - 1][1]]
