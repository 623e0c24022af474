"""Document vectors kept on disk, keyed by what decides them: the model (weights and tokenisation, its fingerprint),
the texts (their content key), the precision and the stored dtype. A model evaluated again unchanged (a zero-shot
baseline, a teacher, a sweep's `train=false` rows, another benchmark run) then encodes nothing the second time, and an
encoding cut short resumes at its first missing shard (shards.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch

from retrieval_exp.hardware import Hardware
from retrieval_exp.interfaces import Embedder
from retrieval_exp.retrieval.shards import TextBatches, VectorDtype, VectorShards, encode_shards, in_batches

FORMAT = "v2"  # bump when the file layout changes (v2: shards)


def cached_shards(
    encoder: Embedder,
    content_key: str,
    batches: TextBatches,
    hardware: Hardware,
    cache_dir: str | Path,
    shard_size: int = 100_000,
    dtype: VectorDtype = "float32",
) -> VectorShards:
    """`encoder`'s document vectors for the texts `batches` gives (whose content `content_key` names) as shards in a
    folder of `cache_dir` named by everything that decides them; shards an earlier (or interrupted) run wrote are read,
    not encoded again. Concurrent jobs write the same bytes; the last rename of a shard wins."""
    name = f"{encoder.fingerprint()}|{content_key}|{hardware.precision}|{dtype}|{shard_size}|{FORMAT}"
    folder = Path(cache_dir) / hashlib.sha1(name.encode()).hexdigest()[:24]
    return encode_shards(encoder, batches, folder, hardware, shard_size, dtype)


def embed_cached(
    encoder: Embedder, content_key: str, texts: Sequence[str], hardware: Hardware, cache_dir: str | Path | None
) -> torch.Tensor:
    """`encoder`'s document vectors for `texts` as one tensor, through `cache_dir` (cached_shards) when set;
    `cache_dir=None` computes without storing."""
    if cache_dir is None:
        return encoder.embed(texts, "doc", hardware.encode_batch_size, hardware.autocast)
    return cached_shards(encoder, content_key, in_batches(texts), hardware, cache_dir).load(hardware.torch_device)
