"""Efficiency against the machine's limit: the useful GFLOP/s of our encoding and training, as a fraction of the
machine's own fp32 matmul rate measured here.

Useful FLOPs are counted by bench/common.forward_flops (projections, feed-forward and attention over each text's real
tokens; padding not counted; a training step = three forward passes). The same work as bench/encode.py and
bench/train.py, ours only. With `--profile`, also prints where a training step's time goes (torch.profiler, top ops).

    HF_HUB_OFFLINE=1 python bench/efficiency.py [--docs 512] [--batch-size 16] [--steps 10] [--profile]
"""

from __future__ import annotations

import argparse

from common import best_seconds, forward_flops, machine, matmul_gflops, token_lengths, top_ops
from encode import scifact_documents
from train import MODEL, StepClock, run_ours, training_flops, training_triples

from retrieval_exp.models.bi_encoder import BiEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=512)
    parser.add_argument("--encode-length", type=int, default=256)
    parser.add_argument("--encode-batch-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16, help="training batch")
    parser.add_argument("--max-length", type=int, default=128, help="training max length")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print the top ops of three training steps")
    args = parser.parse_args()

    peak = matmul_gflops("cpu")
    texts = scifact_documents(args.docs)
    encoder = BiEncoder(MODEL, doc_length=args.encode_length)
    encode_flops = forward_flops(encoder.encoder.config, token_lengths(encoder.tokenizer, texts, args.encode_length))
    seconds = best_seconds({"encode": lambda: encoder.embed(texts, "doc", args.encode_batch_size)}, args.repeats)[
        "encode"
    ]

    triples = training_triples(args.batch_size * (args.warmup + args.steps))
    clock = StepClock()
    run_ours(triples, args, clock)
    examples_per_second = clock.examples_per_second(args.warmup, args.batch_size)
    train_gflops = examples_per_second * training_flops(triples, args.max_length) / len(triples) / 1e9

    print(f"{MODEL}; {machine('cpu')}")
    print(f"machine peak: {peak:.1f} GFLOP/s (fp32 2048 x 2048 matmul, best of 5)")
    print(f"{'':40}{'GFLOP/s':>10}{'of peak':>10}")
    rows = {
        f"encoding ({len(texts)} docs, max {args.encode_length})": encode_flops / seconds / 1e9,
        f"training (batch {args.batch_size}, max {args.max_length})": train_gflops,
    }
    for name, achieved in rows.items():
        print(f"{name:40}{achieved:10.1f}{achieved / peak:10.0%}")
    if args.profile:
        profile_training(triples, args)


def profile_training(triples: list, args: argparse.Namespace) -> None:
    """The ops that take a training step's CPU time, over four steps (the first one warms up)."""
    args.warmup, args.steps = 1, 3
    print("training, 4 steps:")
    print(top_ops(lambda: run_ours(triples[: args.batch_size * 4], args, StepClock()), rows=12))


if __name__ == "__main__":
    main()
