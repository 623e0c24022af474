"""Optimisers beyond torch's own, and the weight-decay parameter groups."""

from __future__ import annotations

from typing import Any

import torch

from retrieval_exp.errors import UserError

MISSING_BITSANDBYTES = (
    "optim adam8bit needs bitsandbytes: pip install -e '.[adam8bit]' on a CUDA machine, or use optim=adamw"
)


def adam8bit(params: Any, lr: float, weight_decay: float = 0.0, **options: Any) -> torch.optim.Optimizer:
    """bitsandbytes' 8-bit Adam, the self-distillation paper's optimiser (CUDA only)."""
    try:
        import bitsandbytes
    except ImportError:
        raise UserError(MISSING_BITSANDBYTES) from None
    return bitsandbytes.optim.Adam8bit(params, lr=lr, weight_decay=weight_decay, **options)


adam8bit.requires = ("bitsandbytes", MISSING_BITSANDBYTES)  # type: ignore[attr-defined]  # read at start-up


def parameter_groups(model: torch.nn.Module, exclude_bias_and_norm: bool) -> list[Any]:
    """Trainable parameters; with `exclude_bias_and_norm`, biases and normalisation weights get no weight decay."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not exclude_bias_and_norm:
        return [p for _, p in named]
    exempt = [p for name, p in named if name.endswith("bias") or "norm" in name.lower()]
    exempt_ids = {id(p) for p in exempt}
    return [{"params": [p for _, p in named if id(p) not in exempt_ids]}, {"params": exempt, "weight_decay": 0.0}]
