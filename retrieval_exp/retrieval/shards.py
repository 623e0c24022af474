"""Document vectors in shards on disk: each shard written (atomically) as soon as it is encoded, so that an encoding
cut short (a preempted job) resumes at the first missing shard; memory-mapped when read, so that a search holds one
block of vectors at a time, not the corpus (MS MARCO's 8.8M x 768 fp32 vectors are 27 GB).

A folder holds `<number>.npy` shards of `shard_size` vectors (float32 or float16) and, once every shard is there,
`complete`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from retrieval_exp.hardware import Hardware
from retrieval_exp.interfaces import Embedder

log = logging.getLogger(__name__)
VectorDtype = Literal["float32", "float16"]
COMPLETE = "complete"


class VectorShards:
    """The shards of one folder, in document order."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.paths = sorted(folder.glob("[0-9]*.npy"))

    def __len__(self) -> int:
        return sum(self._open(path).shape[0] for path in self.paths)

    @staticmethod
    def _open(path: Path) -> np.ndarray:
        return np.load(path, mmap_mode="r")

    def blocks(self, size: int, device: torch.device) -> Iterator[torch.Tensor]:
        """The vectors in order, `size` at a time, as float32 on `device` (read from the memory map block by block)."""
        for path in self.paths:
            vectors = self._open(path)
            for start in range(0, vectors.shape[0], size):
                yield torch.from_numpy(np.array(vectors[start : start + size], dtype=np.float32)).to(device)

    def load(self, device: torch.device) -> torch.Tensor:
        """Every vector, as float32 on `device` (for a re-ranker's few thousand candidates)."""
        return torch.cat([torch.from_numpy(np.array(self._open(p), dtype=np.float32)) for p in self.paths]).to(device)


TextBatches = Callable[[int], Iterable[Sequence[str]]]  # given a size, the texts in order, that many at a time


def in_batches(texts: Sequence[str]) -> TextBatches:
    """`texts` (held) as TextBatches."""
    return lambda size: (texts[start : start + size] for start in range(0, len(texts), size))


def encode_shards(
    encoder: Embedder,
    batches: TextBatches,
    folder: Path,
    hardware: Hardware,
    shard_size: int = 100_000,
    dtype: VectorDtype = "float32",
) -> VectorShards:
    """`encoder`'s document vectors of the texts `batches` gives, in `folder`, encoding only the shards not there
    yet. The texts are read `shard_size` at a time (a streamed corpus is never held), and not at all once the
    folder is complete."""
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / COMPLETE).is_file():
        return VectorShards(folder)
    count = found = 0
    for number, part in enumerate(batches(shard_size)):
        count += len(part)
        if _shard(folder, number).is_file():  # written before the run was cut short
            found += 1
            continue
        vectors = encoder.embed(part, "doc", hardware.encode_batch_size, hardware.autocast)
        partial = folder / f"partial-{os.getpid()}-{number}.npy"  # not a shard's name until it is whole
        np.save(partial, vectors.float().cpu().numpy().astype(dtype))
        os.replace(partial, _shard(folder, number))
        hardware.release_freed_memory()  # what this shard freed is not held through the next (bench/README.md)
    if found:
        log.info("document vectors: %d shards were found in %s, the rest encoded", found, folder)
    (folder / COMPLETE).write_text(f"{count} vectors in shards of {shard_size}, {dtype}\n")
    return VectorShards(folder)


def _shard(folder: Path, number: int) -> Path:
    return folder / f"{number:05d}.npy"
