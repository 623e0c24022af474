"""Training checkpoints: everything needed to continue at the same step, written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

LAST = "last.pt"
BEST = "best.pt"  # the best-validated weights, when training validates


def save(directory: Path, state: dict[str, Any], name: str = LAST) -> None:
    """Write `state` as directory/name; a crash mid-write leaves the previous file intact."""
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f"{name}.partial"
    torch.save(state, partial)
    os.replace(partial, directory / name)


def load(directory: Path, name: str = LAST) -> dict[str, Any] | None:
    """The checkpoint `name` in `directory`, or None."""
    path = directory / name
    return torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None


def require(directory: Path, name: str = LAST) -> dict[str, Any]:
    """The checkpoint `name` in `directory`, which must exist."""
    state = load(directory, name)
    if state is None:
        raise FileNotFoundError(f"no checkpoint {directory / name}")
    return state
