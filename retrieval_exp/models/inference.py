"""Batched inference shared by the models: eval mode, the longest inputs first so that batches pad little, outputs
back in input order, and the training mode restored."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm


@torch.inference_mode()
def longest_first(
    model: torch.nn.Module,
    lengths: Sequence[int],
    batch_size: int,
    compute: Callable[[list[int]], torch.Tensor],
    desc: str,
    unit: str,
) -> torch.Tensor:
    """`compute(rows)` gives one output row per input index in `rows`; returns all outputs, (len(lengths), ...),
    in input order."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    outputs: torch.Tensor | None = None
    with tqdm(total=len(order), desc=desc, unit=unit, leave=False) as progress:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = compute(rows)
            if outputs is None:
                outputs = torch.empty(len(order), *batch.shape[1:], dtype=batch.dtype, device=batch.device)
            outputs[rows] = batch
            progress.update(len(rows))
    model.train(was_training)
    assert outputs is not None, "longest_first() needs at least one input"
    return outputs
