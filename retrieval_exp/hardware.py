"""Where and at what precision a run computes; built from the `hardware/` config group."""

from __future__ import annotations

import contextlib
import ctypes
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
from transformers import PreTrainedModel

from retrieval_exp.errors import UserError
from retrieval_exp.settings import AtLeast, Positive

PRECISIONS = ("fp32", "bf16")


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (macOS, musl)."""
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except OSError:
        return None


MALLOC_TRIM = _malloc_trim()


@dataclass
class Hardware:
    """Device, precision (fp32, or bf16 autocast), CPU threads, data-loader workers, encoding batch size, whether to
    torch.compile the model for evaluation (`compile_inference`), whether training recomputes each transformer
    layer's activations in the backward pass instead of keeping them (`activation_checkpointing`), and whether the
    host memory a training step (or an encoded shard) freed goes back to the system after it (`trim_host_memory`)."""

    device: str = "cpu"
    precision: str = "fp32"
    threads: Positive | None = None
    dataloader_workers: Annotated[int, AtLeast(0)] = 0
    encode_batch_size: Positive = 64
    compile_inference: bool = False
    activation_checkpointing: bool = False
    trim_host_memory: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UserError(f"hardware.precision={self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"hardware.device={self.device!r} but no CUDA device is visible: use hardware=cpu")
        if self.threads:
            torch.set_num_threads(self.threads)

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """bf16 autocast when asked for, a no-op otherwise."""
        return torch.autocast(self.torch_device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def for_inference(self, model: torch.nn.Module) -> torch.nn.Module:
        """With `compile_inference`, compile `model`'s forward in place (dynamic shapes, for batches of any length).

        Compiling MiniLM costs 14-21 s once; then it encodes about 1.15x as fast on CPU (bench/README.md), which pays
        from a few thousand texts on. Training is left uncompiled: it measured slower on CPU. The weights and their
        names stay as they are, so the model saves and loads as before."""
        if self.compile_inference:
            model.compile(dynamic=True)
        return model

    def for_training(self, model: torch.nn.Module) -> torch.nn.Module:
        """With `activation_checkpointing`, every transformers model inside `model` that supports it and has weights
        to train recomputes its layers in the backward pass (a frozen LM, as in Revela and REPLUG, is left alone: its
        recomputation would cost time and free little). torch's checkpoint replays the RNG state, so the dropout masks
        and the numbers are the ones training without it gives; the cost is one more forward pass of each layer."""
        if self.activation_checkpointing:
            for module in model.modules():
                if not (isinstance(module, PreTrainedModel) and module.supports_gradient_checkpointing):
                    continue
                if any(parameter.requires_grad for parameter in module.parameters()):
                    module.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        return model

    def release_freed_memory(self) -> None:
        """With `trim_host_memory`, hand the pages of freed blocks that glibc keeps back to the system
        (malloc_trim(0)); the training loop calls it after each optimizer step, encoding after each shard. glibc
        keeps a step's freed activation blocks (tens of MB each, under its dynamic mmap threshold) for reuse, so a
        CPU run's resident size climbs over the steps and stays there through evaluation; a trim costs tens of
        milliseconds against a CPU step's seconds (bench/README.md, section 8). A no-op without glibc."""
        if self.trim_host_memory and MALLOC_TRIM is not None:
            MALLOC_TRIM(0)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
