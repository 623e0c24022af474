"""Document vectors kept on disk, keyed by what decides them: the model (weights and tokenisation, its fingerprint),
the texts (their content key) and the precision. A model evaluated again unchanged (a zero-shot baseline, a teacher,
a sweep's `train=false` rows, another benchmark run) then encodes nothing the second time."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from retrieval_exp.hardware import Hardware
from retrieval_exp.interfaces import Embedder

log = logging.getLogger(__name__)
FORMAT = "v1"  # bump when the file layout changes


def embed_cached(
    encoder: Embedder, content_key: str, texts: Sequence[str], hardware: Hardware, cache_dir: str | Path | None
) -> torch.Tensor:
    """`encoder`'s document vectors for `texts` (whose content `content_key` names), read from `cache_dir` when an
    earlier run stored them, else computed and stored atomically (concurrent jobs write the same bytes; the last
    rename wins). `cache_dir=None` computes without storing."""
    if cache_dir is None:
        return encoder.embed(texts, "doc", hardware.encode_batch_size, hardware.autocast)
    name = f"{encoder.fingerprint()}|{content_key}|{hardware.precision}|{FORMAT}"
    path = Path(cache_dir) / f"{hashlib.sha1(name.encode()).hexdigest()[:24]}.pt"
    device = hardware.torch_device
    if path.is_file():
        log.info("document vectors of %d texts read from %s", len(texts), path)
        return torch.load(path, map_location=device)
    vectors = encoder.embed(texts, "doc", hardware.encode_batch_size, hardware.autocast)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")  # per process; created under the umask
    torch.save(vectors.cpu(), partial)
    os.replace(partial, path)
    return vectors
