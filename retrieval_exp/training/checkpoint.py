"""Training checkpoints: everything needed to continue at the same step, written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

LAST = "last.pt"


def save(directory: Path, state: dict[str, Any]) -> None:
    """Write `state` as directory/last.pt; a crash mid-write leaves the previous checkpoint intact."""
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f"{LAST}.partial"
    torch.save(state, partial)
    os.replace(partial, directory / LAST)


def load(directory: Path) -> dict[str, Any] | None:
    """The last checkpoint in `directory`, or None."""
    path = directory / LAST
    return torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None
