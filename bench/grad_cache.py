"""Gradient caching against batch size: peak memory and examples/s of InfoNCE training (in-batch plus one hard
negative) with and without `trainer.cache_chunk`, and sentence-transformers' CachedMultipleNegativesRankingLoss on
the same work, batch sizes 32 ... 1024, in one run. Each point is bench/train.py's `--contender` run in a fresh
process (the same model, triples, order, optimiser and max length); a point that does not fit (killed, or out of
memory) is reported as such.

    HF_HUB_OFFLINE=1 python bench/grad_cache.py [--batch-sizes 32 64 ... 1024] [--chunk 32] [--timed-examples 512]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path

from common import machine
from train import MODEL

TRAIN = Path(__file__).with_name("train.py")
SETUPS = {  # label -> (contender, cached)
    "ours": ("ours", False),
    "ours, cached": ("ours", True),
    "s-t cached (CMNRL)": ("peer", True),
}


def out_of_memory(done: subprocess.CompletedProcess[str]) -> bool:
    """Killed (the kernel's OOM killer sends SIGKILL) or an allocation that failed."""
    return done.returncode == -signal.SIGKILL or any(s in done.stderr for s in ("MemoryError", "out of memory"))


def point(contender: str, batch_size: int, chunk: int | None, args: argparse.Namespace) -> dict[str, float] | None:
    """One contender at one batch size, or None when it did not fit."""
    command = [sys.executable, str(TRAIN), f"--contender={contender}", f"--batch-size={batch_size}"]
    steps = max(1, args.timed_examples // batch_size)  # short steps are timed over several, so that noise averages
    command += [f"--max-length={args.max_length}", f"--warmup={args.warmup}", f"--steps={steps}"]
    command += [f"--dataset={args.dataset}"]
    command += [f"--cache-chunk={chunk}"] if chunk else []
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 and not out_of_memory(done):
        raise SystemExit(f"{contender} at batch {batch_size} failed: {done.stderr.strip().splitlines()[-1]}")
    if done.returncode != 0:
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256, 512, 1024])
    parser.add_argument("--chunk", type=int, default=32, help="texts per cached chunk (both sides)")
    parser.add_argument("--dataset", default="beir/nfcorpus/train", help="enough pairs for 3 batches of 1024")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--timed-examples", type=int, default=512, help="timed steps: this many examples, >= 1 step")
    args = parser.parse_args()
    print(f"{MODEL}; {machine('cpu')}")
    print(f"{args.dataset} triples, max length {args.max_length}, chunk {args.chunk}, ", end="")
    print(f"timed over max(1, {args.timed_examples} / batch) steps after {args.warmup}")
    print(f"{'batch':>6}" + "".join(f"{label + ' ex/s':>26}{'MiB':>8}" for label in SETUPS))
    for batch_size in args.batch_sizes:
        cells = []
        for contender, cached in SETUPS.values():
            found = point(contender, batch_size, args.chunk if cached else None, args)
            cells.append("" if found is None else f"{found['examples_per_second']:26.2f}{found['extra_mib']:8.0f}")
            cells[-1] = cells[-1] or f"{'did not fit':>26}{'':>8}"
        print(f"{batch_size:6}" + "".join(cells), flush=True)


if __name__ == "__main__":
    main()
