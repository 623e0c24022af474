"""Dense search: retrieval_exp's exact_top_k (torch, corpus in chunks) against faiss IndexFlatIP, both exact
inner-product top-k, and the extra memory each search takes as a function of the chunk size.

Random unit vectors (100k and 1M docs by default) and the real SciFact vectors of all-MiniLM-L6-v2 (5,183 docs, 300
queries; encoded once and cached). faiss's index is built before timing, so only its search is timed. Peak memory is
the resident high-water mark (VmHWM, reset through /proc/self/clear_refs) above the resident size before the call,
in a fresh process for each setting so that no memory freed earlier is reused.

    HF_HUB_OFFLINE=1 python bench/search.py [--docs 100000 1000000] [--queries 1000] [--k 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable

import faiss
import torch
from common import best_seconds, machine, peak_memory, reset_peak_memory

from retrieval_exp.data import irds
from retrieval_exp.models.bi_encoder import BiEncoder
from retrieval_exp.retrieval.bm25 import default_index_root
from retrieval_exp.retrieval.dense import exact_top_k

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
CACHE = default_index_root().parent / "bench" / "scifact-all-MiniLM-L6-v2.pt"  # the suite's cache root
MiB = 2**20


def unit_vectors(count: int, dim: int, seed: int) -> torch.Tensor:
    """Random unit vectors, made in place so that making them leaves no high-water mark above their size."""
    vectors = torch.empty(count, dim).normal_(generator=torch.Generator().manual_seed(seed))
    return vectors.div_(vectors.norm(dim=1, keepdim=True))


def scifact_vectors() -> tuple[torch.Tensor, torch.Tensor]:
    """SciFact test queries and corpus through all-MiniLM-L6-v2 (about 3 minutes on 2 CPU cores, then cached)."""
    if not CACHE.is_file():
        encoder = BiEncoder(MODEL, doc_length=256)
        corpus = irds.corpus("beir/scifact/test")
        queries = list(irds.queries("beir/scifact/test").values())
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        vectors = {"queries": encoder.embed(queries, "query", 64), "docs": encoder.embed(corpus.texts, "doc", 64)}
        torch.save(vectors, CACHE)
    vectors = torch.load(CACHE)
    return vectors["queries"], vectors["docs"]


def extra_memory(search: Callable[[], object]) -> int:
    """Bytes by which the process's peak resident size rose above its size before `search` ran."""
    before = reset_peak_memory()
    search()
    return peak_memory() - before


def compare(name: str, queries: torch.Tensor, docs: torch.Tensor, k: int, chunk: int, repeats: int) -> None:
    """Time both searches on the same vectors, check they return the same documents, print one row."""
    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(docs.numpy())
    ours = exact_top_k(queries, docs, k, chunk)[1]
    peer = torch.from_numpy(index.search(queries.numpy(), k)[1])
    agreement = sum(len(set(a) & set(b)) for a, b in zip(ours.tolist(), peer.tolist())) / ours.numel()
    best = best_seconds(
        {
            "ours": lambda: exact_top_k(queries, docs, k, chunk),
            "faiss": lambda: index.search(queries.numpy(), k),
        },
        repeats,
    )
    rate = {who: len(queries) / seconds for who, seconds in best.items()}
    print(
        f"{name:28}{len(docs):>9}{len(queries):>9}{rate['ours']:>12.1f}{rate['faiss']:>12.1f}"
        f"{best['faiss'] / best['ours']:>8.2f}x{agreement:>10.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--chunk-size", type=int, default=65_536, help="exact_top_k's chunk (the retriever default)")
    parser.add_argument("--memory-chunks", type=int, nargs="+", default=[4096, 16_384, 65_536, 262_144])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        return memory_of(args.memory_of, args)

    print(f"{machine('cpu')}, faiss {faiss.__version__} ({faiss.omp_get_max_threads()} threads)")
    print(f"exact top-{args.k}, fp32 inner product, chunk {args.chunk_size}, best of {args.repeats}")
    print(f"{'vectors':28}{'docs':>9}{'queries':>9}{'ours q/s':>12}{'faiss q/s':>12}{'ratio':>9}{'overlap':>10}")
    queries = unit_vectors(args.queries, args.dim, seed=0)
    for count in args.docs:
        compare("random unit", queries, unit_vectors(count, args.dim, seed=1), args.k, args.chunk_size, args.repeats)
    scifact_queries, scifact_docs = scifact_vectors()
    compare("SciFact all-MiniLM-L6-v2", scifact_queries, scifact_docs, args.k, args.chunk_size, args.repeats)

    count = max(args.docs)
    size = f"{len(queries)} queries x {count} docs ({count * args.dim * 4 / MiB:.0f} MiB)"
    print(f"\nextra peak memory of one search, {size}, each in a fresh process:")
    print(f"{'search':>16}{'extra MiB':>11}{'queries x chunk x 4 B':>23}")
    for chunk in args.memory_chunks:
        extra = measured_in_fresh_process(f"--memory-of={chunk}", args)
        print(f"{'chunk ' + str(chunk):>16}{extra:>11.0f}{len(queries) * chunk * 4 / MiB:>23.0f}")
    print(f"{'faiss':>16}{measured_in_fresh_process('--memory-of=faiss', args):>11.0f}   (add, then search)")


def measured_in_fresh_process(option: str, args: argparse.Namespace) -> float:
    """Extra MiB of one search, measured in a new Python process (the allocator of this one has memory to reuse)."""
    command = [sys.executable, __file__, option, f"--queries={args.queries}", f"--dim={args.dim}", f"--k={args.k}"]
    command.append(f"--docs={max(args.docs)}")
    return float(subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()[-1])


def memory_of(search: str, args: argparse.Namespace) -> None:
    """Print the extra MiB of one search, exact_top_k with chunk `search` or faiss (its index built from scratch)."""
    queries = unit_vectors(args.queries, args.dim, seed=0)
    docs = unit_vectors(max(args.docs), args.dim, seed=1)
    if search == "faiss":
        index = faiss.IndexFlatIP(args.dim)
        extra = extra_memory(lambda: (index.add(docs.numpy()), index.search(queries.numpy(), args.k)))
    else:
        extra = extra_memory(lambda: exact_top_k(queries, docs, args.k, int(search)))
    print(extra / MiB)


if __name__ == "__main__":
    main()
