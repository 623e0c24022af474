"""Cross-encoder re-ranking throughput: retrieval_exp's CrossEncoder.score_pairs against sentence-transformers'
CrossEncoder.predict on the same (query, document) pairs.

The pairs are BM25's top `--depth` (pyserini) for the first `--queries` SciFact test queries. Both models are
all-MiniLM-L6-v2 with a fresh one-logit head (the head's cost is nil), batch 64, CPU fp32. The documents are cut to
`--doc-length` tokens beforehand and neither side truncates further, so both tokenise to the same pairs, which the
script checks by counting tokens. The two alternate within each round, and the best of `--repeats` counts.

    HF_HUB_OFFLINE=1 python bench/rerank.py [--queries 50] [--depth 20] [--doc-length 256] [--repeats 3]
"""

from __future__ import annotations

import argparse

import torch
from common import best_seconds, machine
from sentence_transformers import CrossEncoder as PeerCrossEncoder

from retrieval_exp.data import irds
from retrieval_exp.models.cross_encoder import CrossEncoder
from retrieval_exp.retrieval.bm25 import BM25

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
NO_LIMIT = 512  # the model's position limit; the texts are shorter


def bm25_pairs(queries: int, depth: int) -> tuple[dict[str, str], dict[str, str], list[tuple[str, str]]]:
    """Query texts, document texts and BM25's top `depth` pairs for the first `queries` SciFact test queries."""
    corpus = irds.corpus("beir/scifact/test")
    chosen = dict(list(irds.queries("beir/scifact/test").items())[:queries])
    run = BM25().search(corpus, chosen, depth)
    pairs = [(query_id, doc_id) for query_id, docs in run.items() for doc_id in docs]
    wanted = {doc_id for _, doc_id in pairs}
    return chosen, {d: t for d, t in zip(corpus.ids, corpus.texts) if d in wanted}, pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--doc-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    queries, documents, pairs = bm25_pairs(args.queries, args.depth)
    ours = CrossEncoder(MODEL, query_length=NO_LIMIT, doc_length=NO_LIMIT).to(args.device)
    tokenizer = ours.tokenizer
    documents = {
        doc_id: tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][: args.doc_length])
        for doc_id, text in documents.items()
    }
    peer = PeerCrossEncoder(MODEL, num_labels=1, max_length=NO_LIMIT, device=args.device)
    texts = [(queries[q], documents[d]) for q, d in pairs]
    our_tokens = int(ours.tokenize(*zip(*texts))["attention_mask"].sum())
    peer_tokens = int(peer.preprocess(texts)["attention_mask"].sum())

    best = best_seconds(
        {
            "retrieval_exp": lambda: ours.score_pairs(queries, documents, pairs, args.batch_size),
            "sentence-transformers": lambda: peer.predict(texts, batch_size=args.batch_size),
        },
        args.repeats,
    )
    print(
        f"{MODEL} as a cross-encoder on {args.device}; {machine(args.device)}\n"
        f"{len(pairs)} pairs (BM25 top {args.depth} of {len(queries)} SciFact queries, docs cut to {args.doc_length} "
        f"tokens), batch {args.batch_size}, best of {args.repeats}; tokens: ours {our_tokens}, peer {peer_tokens}"
    )
    print(f"{'':24}{'pairs/s':>10}{'tokens/s':>12}")
    for name, seconds in best.items():
        print(f"{name:24}{len(pairs) / seconds:10.1f}{our_tokens / seconds:12.0f}")
    print(f"ratio (ours / peer): {best['sentence-transformers'] / best['retrieval_exp']:.2f}x")


if __name__ == "__main__":
    main()
