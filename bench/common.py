"""What the benchmarks share: alternating best-of-N timing, the machine's description, its measured matmul peak,
and the FLOPs a BERT-style encoder spends per token."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import psutil
import torch
import transformers
from transformers import PretrainedConfig


def best_seconds(contenders: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Each contender's best time over `repeats` rounds; within a round they run one after the other, so that all
    see the same machine state. GPU work is waited for."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            started = time.perf_counter()
            run()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - started)
    return {name: min(values) for name, values in times.items()}


def machine(device: str) -> str:
    """One line: the processor or GPU, torch's threads, and the library versions."""
    if device.startswith("cuda"):
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} torch threads"
    return f"{where}; torch {torch.__version__}, transformers {transformers.__version__}"


def matmul_gflops(device: str, size: int = 2048, dtype: torch.dtype = torch.float32, repeats: int = 5) -> float:
    """The machine's own dense fp32 matmul rate, GFLOP/s: the best of `repeats` (size x size) @ (size x size)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)

    a @ b
    seconds = best_seconds({"matmul": lambda: a @ b}, repeats)["matmul"]
    return 2 * size**3 / seconds / 1e9


def forward_flops(config: PretrainedConfig, lengths: Sequence[int]) -> float:
    """Useful forward FLOPs of a BERT-style encoder over texts of these token lengths (padding not counted).

    Per token and layer: 2 x (4 h^2 + 2 h i) for the projections and the feed-forward block, plus 4 h n for
    attention scores and the weighted sum over the text's n tokens. Embeddings, norms and pooling are left out
    (under 1% for MiniLM). A training step costs about three forward passes (the backward pass two).
    """
    hidden, inner, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    dense = 2 * (4 * hidden**2 + 2 * hidden * inner)
    return float(sum(n * layers * (dense + 4 * hidden * n) for n in lengths))


def token_lengths(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[int]:
    """Each text's token count after truncation, special tokens included."""
    return [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]


def reset_peak_memory() -> int:
    """Reset the process's resident high-water mark (Linux VmHWM); returns the resident bytes now."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    return psutil.Process().memory_info().rss


def peak_memory() -> int:
    """The process's resident high-water mark in bytes, since it started or since reset_peak_memory()."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))


def top_ops(work: Callable[[], object], rows: int = 8) -> str:
    """Where `work`'s CPU time goes: total self time, then the `rows` costliest ops with their share and calls."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        work()
    ops = sorted(profile.key_averages(), key=lambda op: -op.self_cpu_time_total)
    total = sum(op.self_cpu_time_total for op in ops)
    lines = [f"  {op.key:52}{op.self_cpu_time_total / total:7.1%}{op.count:8}" for op in ops[:rows]]
    return "\n".join([f"  total self CPU time {total / 1e6:.2f} s; op, share, calls:", *lines])
