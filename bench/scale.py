"""How each data stage's memory and time grow with the data, measured on synthetic MS MARCO-shaped data and
extrapolated to MS MARCO (8.8M passages, ~400M docpairs, Revela's 320k chunk groups).

The data: passages of random words from a Zipf-distributed 30k-word vocabulary, their lengths log-normal around MS
MARCO's (median 52 words, mean 56), queries of ~6 words, one judged passage per query, docpairs grouped by query as the
official qidpidtriples are (pairs per query log-normal, median 400, so that some queries have fewer than 128), and
chunk-group JSONL lines of 16 chunks of ~120 words. Each stage runs in a fresh process (its peak resident size is the
process's, from wait4), at each size:

    docpairs      DocpairTriples(group_size=128): the one-pass grouping and the first epoch's draw
    chunk_groups  ChunkGroups: the offset index, an epoch's order and 1,000 groups read
    bm25          Lucene BM25 (pyserini): indexing the corpus, then 100 queries' top 100
    encode        document vectors of a 2-layer 32-wide BERT into float16 shards (retrieval/shards.py)
    search        exact top 1,000 of 1,000 queries, streamed over those shards
    docstore      building ir_datasets' docstore of the corpus (PickleLz4FullStore, as MS MARCO's, once per machine)
    lookup        43 x 1,000 candidates' texts through that docstore (re-ranking TREC DL's top 1000)

Memory is fitted as a + b*n (least squares) and time as c*n^p (log-log), and extrapolated; the table goes in
bench/README.md. The dense stages' vectors are 32-wide here: a 768-wide model's add 768/32 times their per-vector
bytes, which the index itself (shards on disk, or a faiss index) holds, not the stage.

    python bench/scale.py [--docs 20000 60000 200000] [--docpairs 1000000 3000000 10000000] [--groups 3000 10000 30000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from common import machine

BENCH = Path(__file__).resolve().parent
MS_MARCO = {"docs": 8_841_823, "docpairs": 397_768_673, "groups": 320_000}
STAGES = {
    "docpairs": "docpairs",
    "chunk_groups": "groups",
    "bm25": "docs",
    "encode": "docs",
    "search": "docs",
    "docstore": "docs",
    "lookup": "docs",
}
VOCABULARY = 30_000
DOCPAIR_CORPUS = 100_000  # the corpus the docpairs point into: fixed, so that only the docpairs grow


class Words:
    """Random text of a Zipf-distributed vocabulary, seeded."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
        lengths = self.rng.integers(3, 11, VOCABULARY)
        self.vocabulary = ["".join(self.rng.choice(letters, n)) + str(i) for i, n in enumerate(lengths)]
        weights = 1.0 / np.arange(1, VOCABULARY + 1)
        self.weights = weights / weights.sum()

    def texts(self, count: int, median_words: float, sigma: float) -> list[str]:
        lengths = np.clip(self.rng.lognormal(math.log(median_words), sigma, count).astype(int), 3, 300)
        words = self.rng.choice(VOCABULARY, int(lengths.sum()), p=self.weights)
        ends = np.cumsum(lengths)
        return [" ".join(self.vocabulary[w] for w in words[end - n : end]) for n, end in zip(lengths, ends)]


def write_collection(folder: Path, docs: int, queries: int | None = None, seed: int = 0) -> None:
    """A BEIR folder of `docs` passages and `queries` (default docs // 10) with one judged passage each."""
    if (folder / "qrels" / "train.tsv").is_file():
        return
    words = Words(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w") as corpus:
        for start in range(0, docs, 100_000):
            for i, text in enumerate(words.texts(min(100_000, docs - start), 52, 0.4), start):
                corpus.write(json.dumps({"_id": str(i), "title": "", "text": text}) + "\n")
    queries = queries or max(100, docs // 10)
    texts = words.texts(queries, 5.5, 0.35)
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )
    (folder / "qrels").mkdir(exist_ok=True)
    judged = words.rng.integers(0, docs, queries)
    (folder / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\t{d}\t1\n" for i, d in enumerate(judged))
    )


def write_docpairs(folder: Path, pairs: int, seed: int = 0) -> None:
    """The DOCPAIR_CORPUS collection with `pairs` docpairs, grouped by query."""
    if (folder / "docpairs.tsv").is_file():
        return
    queries = pairs // 100 + 100  # more than the groups (pairs per query: median 400), so that no query id repeats
    write_collection(folder, DOCPAIR_CORPUS, queries, seed)
    rng = np.random.default_rng(seed)
    written = query = 0
    with (folder / "docpairs.partial").open("w") as out:
        while written < pairs:
            count = min(pairs - written, max(1, int(rng.lognormal(math.log(400), 1.0))))
            positive = rng.integers(0, DOCPAIR_CORPUS)
            negatives = rng.integers(0, DOCPAIR_CORPUS, count)
            out.write("".join(f"q{query}\t{positive}\t{n}\n" for n in negatives))
            written, query = written + count, query + 1
    (folder / "docpairs.partial").rename(folder / "docpairs.tsv")


def write_groups(path: Path, groups: int, seed: int = 0) -> None:
    """`groups` JSONL lines of 16 chunks."""
    if path.is_file():
        return
    words = Words(seed)
    with path.with_suffix(".partial").open("w") as out:
        for start in range(0, groups, 5_000):
            chunks = words.texts(16 * min(5_000, groups - start), 120, 0.2)
            out.write(
                "".join(
                    json.dumps({"src": "synthetic", "text": chunks[i : i + 16]}) + "\n"
                    for i in range(0, len(chunks), 16)
                )
            )
    path.with_suffix(".partial").rename(path)


def tiny_model(folder: Path) -> Path:
    """A 2-layer, 32-wide BERT whose vocabulary is the synthetic words (one token per word, as MS MARCO's words mostly
    are one or two)."""
    if not (folder / "config.json").is_file():
        import torch
        from transformers import BertConfig, BertModel, BertTokenizer

        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *Words(0).vocabulary]
        torch.manual_seed(0)
        config = BertConfig(
            vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
        )
        BertModel(config).save_pretrained(folder)
        BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=False).save_pretrained(folder)
    return folder


def run_stage(stage: str, size: int, work: Path) -> dict[str, float]:
    """One stage at one size, in this process; returns what it measured besides memory."""
    from retrieval_exp.data import irds
    from retrieval_exp.data.local import register_beir_folder

    started = time.perf_counter()
    if stage == "docpairs":
        from retrieval_exp.data.triples import DocpairTriples

        register_beir_folder("scale/docpairs", work / f"docpairs-{size}", "train")
        triples = DocpairTriples("scale/docpairs", group_size=128)
        figures = {"kept": float(len(triples.epoch(0)))}
    elif stage == "chunk_groups":
        from retrieval_exp.data.chunk_groups import ChunkGroups

        epoch = ChunkGroups(str(work / f"groups-{size}.jsonl")).epoch(1)
        figures = {"read": float(sum(len(epoch[i]) for i in range(0, len(epoch), max(1, len(epoch) // 1000))))}
    elif stage in ("docstore", "lookup"):
        store = with_docstore(work, size)
        if stage == "docstore":
            store.build()
            figures = {}
        else:
            wanted = {str(d) for d in np.random.default_rng(1).integers(0, size, 43_000)}
            figures = {"looked_up": float(len(irds.corpus("scale/stored").texts_of(wanted)))}
    else:
        register_beir_folder("scale/docs", work / f"docs-{size}", "train")
        corpus, queries = irds.corpus("scale/docs"), irds.queries("scale/docs")
        figures = stage_on_corpus(stage, corpus, queries, work, size)
    return {"seconds": time.perf_counter() - started, **figures}


def with_docstore(work: Path, size: int) -> Any:
    """docs-<size> registered again as scale/stored, its passages in an ir_datasets docstore (built on first use)."""
    import ir_datasets
    from ir_datasets.datasets.base import Dataset
    from ir_datasets.datasets.beir import BeirTitleDoc
    from ir_datasets.indices import PickleLz4FullStore

    from retrieval_exp.data.local import register_beir_folder

    register_beir_folder("scale/docs", work / f"docs-{size}", "train")
    local = ir_datasets.load("scale/docs")
    store = PickleLz4FullStore(str(work / f"docstore-{size}"), local.docs_iter, BeirTitleDoc, "doc_id", ["doc_id"])

    class Stored:
        def docs_iter(self) -> Any:
            return local.docs_iter()

        def docs_store(self) -> Any:
            return store

        def docs_cls(self) -> type:
            return BeirTitleDoc

    ir_datasets.registry.register("scale/stored", Dataset(Stored(), local))
    return store


def stage_on_corpus(stage: str, corpus: Any, queries: dict[str, str], work: Path, size: int) -> dict[str, float]:
    from retrieval_exp.hardware import Hardware
    from retrieval_exp.retrieval.bm25 import BM25
    from retrieval_exp.retrieval.dense import DenseRetriever

    asked = dict(list(queries.items())[:1000])
    if stage == "bm25":
        shutil.rmtree(work / "bm25", ignore_errors=True)  # indexing is what is measured
        run = BM25(index_root=str(work / "bm25")).search(corpus, dict(list(asked.items())[:100]), 100)
        return {"ranked": float(sum(map(len, run.values())))}
    from retrieval_exp.models.bi_encoder import BiEncoder

    encoder = BiEncoder(str(tiny_model(work / "model")), query_length=32, doc_length=256)
    vectors = work / f"vectors-{size}"
    retriever = DenseRetriever(encoder, Hardware(encode_batch_size=256), cache_dir=str(vectors), dtype="float16")
    if stage == "encode":
        shutil.rmtree(vectors, ignore_errors=True)  # encoding is what is measured
        retriever.blocks(corpus)
        return {}
    run = retriever.search(corpus, asked, 1000)
    return {"ranked": float(sum(map(len, run.values())))}


def measured(stage: str, size: int, work: Path) -> dict[str, float]:
    """The stage in a fresh process: its figures and its peak resident MB (a JVM's included: it is a thread)."""
    command = [sys.executable, __file__, "--stage", stage, "--size", str(size), "--work", str(work)]
    with tempfile.TemporaryFile("w+") as errors:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True)
        assert child.stdout is not None
        output = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        if os.waitstatus_to_exitcode(status):
            errors.seek(0)
            raise SystemExit(f"{stage} at {size} failed:\n{errors.read()[-3000:]}")
    return json.loads(output.strip().splitlines()[-1]) | {"peak_mb": usage.ru_maxrss / 1024}


def fit(sizes: list[int], values: list[float], log_log: bool) -> Callable[[float], float]:
    """a + b*n, or c*n^p with `log_log`, through the points (least squares)."""
    x, y = np.array(sizes, dtype=float), np.array(values, dtype=float)
    if log_log:
        p, c = np.polyfit(np.log(x), np.log(y), 1)
        return lambda n: float(math.exp(c) * n**p)
    b, a = np.polyfit(x, y, 1)
    return lambda n: float(a + b * n)


def prepare(work: Path, args: argparse.Namespace) -> None:
    for docs in args.docs:
        write_collection(work / f"docs-{docs}", docs)
    for pairs in args.docpairs:
        folder = work / f"docpairs-{pairs}"
        write_docpairs(folder, pairs)
    for groups in args.groups:
        write_groups(work / f"groups-{groups}.jsonl", groups)
    tiny_model(work / "model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[20_000, 60_000, 200_000])
    parser.add_argument("--docpairs", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    parser.add_argument("--groups", type=int, nargs="+", default=[3_000, 10_000, 30_000])
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "retrieval_exp_scale")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.size, args.work)))
        return
    prepare(args.work, args)
    print(f"{machine('cpu')}; synthetic MS MARCO-shaped data in {args.work}")
    print("| stage | size | peak RSS MB | seconds | fit | MS MARCO size | extrapolated RSS GB | extrapolated time |")
    print("|---|---|---|---|---|---|---|---|")
    for stage in args.stages:
        unit = STAGES[stage]
        sizes = getattr(args, unit)
        points = [measured(stage, size, args.work) for size in sizes]
        for size, point in zip(sizes, points):
            print(f"| {stage} | {size:,} | {point['peak_mb']:,.0f} | {point['seconds']:.1f} | | | | |", flush=True)
        memory = fit(sizes, [p["peak_mb"] for p in points], log_log=False)
        seconds = fit(sizes, [p["seconds"] for p in points], log_log=True)
        growth = math.log(seconds(10.0 * sizes[-1]) / seconds(sizes[-1]), 10)
        per_million = (memory(1e6) - memory(0)) / 1e3
        target = MS_MARCO[unit]
        print(
            f"| {stage} | fit | | | {memory(0):,.0f} MB + {per_million:.2f} GB per 1M {unit}; time ~ n^{growth:.2f} "
            f"| {target:,} "
            f"| {memory(target) / 1024:.1f} | {seconds(target) / 3600:.1f} h |",
            flush=True,
        )


if __name__ == "__main__":
    main()
