"""Encoding throughput: retrieval_exp's BiEncoder.embed against sentence-transformers' encode.

Same model, same texts (SciFact documents), same max length and batch size, in one process, alternating so that
both see the same machine state; the best of `--repeats` rounds counts. Prints docs/s, tokens/s, the useful GFLOP/s
(bench/common.forward_flops) and our/peer ratio, and checks that both give the same embeddings. A third row is ours
with `hardware.compile_inference=true` (torch.compile; its one-off compile time is printed, not timed). `--profile`
then prints, for ours and the peer, where one pass's CPU time goes.

    HF_HUB_OFFLINE=1 python bench/encode.py [--docs 512] [--batch-size 64] [--max-length 256] [--repeats 5]
"""

from __future__ import annotations

import argparse

import torch
from common import best_seconds, forward_flops, machine, token_lengths, top_ops
from sentence_transformers import SentenceTransformer

from retrieval_exp.data import irds
from retrieval_exp.hardware import Hardware
from retrieval_exp.models.bi_encoder import BiEncoder

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def scifact_documents(count: int) -> list[str]:
    return irds.corpus("beir/scifact/test").texts[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--profile", action="store_true", help="print each side's top ops over one pass")
    args = parser.parse_args()

    texts = scifact_documents(args.docs)
    ours = BiEncoder(MODEL, doc_length=args.max_length).to(args.device)
    compiled = Hardware(compile_inference=True).for_inference(BiEncoder(MODEL, doc_length=args.max_length))
    compiled.to(args.device)
    peer = SentenceTransformer(MODEL, device=args.device)
    peer.max_seq_length = args.max_length
    lengths = token_lengths(ours.tokenizer, texts, args.max_length)
    flops = forward_flops(ours.encoder.config, lengths)

    passes = {
        "retrieval_exp": lambda: ours.embed(texts, "doc", args.batch_size),
        "retrieval_exp compiled": lambda: compiled.embed(texts, "doc", args.batch_size),
        "sentence-transformers": lambda: peer.encode(texts, batch_size=args.batch_size, show_progress_bar=False),
    }
    with torch.inference_mode():
        a = ours.embed(texts, "doc", args.batch_size)
        b = peer.encode(texts, batch_size=args.batch_size, convert_to_tensor=True, normalize_embeddings=True)
        agreement = torch.nn.functional.cosine_similarity(a.cpu(), b.cpu().float()).min().item()
        compile_seconds = best_seconds({"compile": passes["retrieval_exp compiled"]}, 1)["compile"]
        best = best_seconds(passes, args.repeats)

    print(f"{MODEL} on {args.device}; {machine(args.device)}")
    print(
        f"{len(texts)} SciFact docs, {sum(lengths)} tokens, max length {args.max_length}, batch {args.batch_size}, "
        f"best of {args.repeats}"
    )
    print(f"{'':24}{'docs/s':>10}{'tokens/s':>12}{'GFLOP/s':>10}")
    for name, seconds in best.items():
        print(f"{name:24}{len(texts) / seconds:10.1f}{sum(lengths) / seconds:12.0f}{flops / seconds / 1e9:10.1f}")
    ratios = {name: best["sentence-transformers"] / best[name] for name in ("retrieval_exp", "retrieval_exp compiled")}
    print(f"ratio (ours / peer): {ratios['retrieval_exp']:.2f}x; compiled: {ratios['retrieval_exp compiled']:.2f}x")
    print(f"first compiled pass (compiling included): {compile_seconds:.1f} s")
    print(f"min cosine between our embeddings and the peer's: {agreement:.6f}")
    if args.profile:
        with torch.inference_mode():
            for name in ("retrieval_exp", "sentence-transformers"):
                print(f"{name}:\n{top_ops(passes[name])}")


if __name__ == "__main__":
    main()
