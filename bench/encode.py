"""Encoding throughput: retrieval_exp's BiEncoder.embed against sentence-transformers' encode.

Same model, same texts (SciFact documents), same max length and batch size, in one process, alternating so that
both see the same machine state. Prints docs/s, tokens/s and our/peer ratio.

    HF_HUB_OFFLINE=1 python bench/encode.py [--docs 512] [--batch-size 64] [--max-length 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from sentence_transformers import SentenceTransformer

from retrieval_exp.data import irds
from retrieval_exp.models.bi_encoder import BiEncoder

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def best_seconds(contenders: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Each contender's best time over `repeats` rounds; within a round they run one after the other."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, encode in contenders.items():
            started = time.perf_counter()
            encode()
            times[name].append(time.perf_counter() - started)
    return {name: min(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    texts = irds.corpus("beir/scifact/test").texts[: args.docs]
    ours = BiEncoder(MODEL, doc_length=args.max_length).to(args.device)
    peer = SentenceTransformer(MODEL, device=args.device)
    peer.max_seq_length = args.max_length
    tokens = int(ours.tokenize(texts, "doc")["attention_mask"].sum())

    with torch.inference_mode():
        a = ours.embed(texts, "doc", args.batch_size)
        b = peer.encode(texts, batch_size=args.batch_size, convert_to_tensor=True, normalize_embeddings=True)
        agreement = torch.nn.functional.cosine_similarity(a.cpu(), b.cpu().float()).min().item()
        best = best_seconds(
            {
                "retrieval_exp": lambda: ours.embed(texts, "doc", args.batch_size),
                "sentence-transformers": lambda: peer.encode(
                    texts, batch_size=args.batch_size, show_progress_bar=False
                ),
            },
            args.repeats,
        )

    print(
        f"{MODEL} on {args.device} ({torch.get_num_threads()} threads), {len(texts)} SciFact docs, "
        f"{tokens} tokens, max length {args.max_length}, batch {args.batch_size}, best of {args.repeats}"
    )
    print(f"{'':24}{'docs/s':>10}{'tokens/s':>12}")
    for name, seconds in best.items():
        print(f"{name:24}{len(texts) / seconds:10.1f}{tokens / seconds:12.0f}")
    ratio = best["sentence-transformers"] / best["retrieval_exp"]
    print(f"ratio (ours / peer): {ratio:.2f}x; min cosine between the two embeddings: {agreement:.6f}")


if __name__ == "__main__":
    main()
