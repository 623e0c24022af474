"""The benchmark scripts a lent GPU or a scale study runs, at tiny size on the CPU, so that they do not rot: each
prints its whole table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.slow
def test_the_gpu_check_prints_every_row_on_the_cpu(tiny_bert: Path, tiny_llama: Path) -> None:
    tiny = ["--device", "cpu", "--bert", str(tiny_bert), "--lm", str(tiny_llama), "--texts", "48", "--batch", "8"]
    tiny += ["--train-batch", "4", "--groups", "1", "--max-length", "32", "--repeats", "1"]
    done = subprocess.run(["bash", str(BENCH / "gpu_check.sh"), *tiny], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split(" | ")[0].strip("| ") for line in done.stdout.splitlines() if line.startswith("| ")}
    assert rows >= {
        "bi-encoder bf16 vs fp32",
        "encode (bf16)",
        "InfoNCE step bf16 vs fp32",
        "InfoNCE train step (bf16)",
        "cross-encoder bf16 vs fp32",
        "re-rank (bf16)",
        "Revela step bf16 vs fp32",
        "Revela train step (bf16)",
    }


@pytest.mark.slow
def test_the_scale_benchmark_fits_every_stage(tmp_path: Path, tiny_bert: Path) -> None:
    sizes = ["--docs", "300", "600", "--docpairs", "3000", "6000", "--groups", "20", "40"]
    command = [sys.executable, str(BENCH / "scale.py"), *sizes, "--work", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=BENCH)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| ")]
    assert [row[0].strip("| ") for row in rows if row[1] == "fit"] == [
        "docpairs",
        "chunk_groups",
        "bm25",
        "encode",
        "search",
        "docstore",
        "lookup",
    ]
