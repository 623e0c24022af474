"""What a benchmark's evaluation costs: `python launch.py experiment=zero_shot benchmark=offline` run twice on an empty
embedding cache (the second run finds every collection's document vectors there), with the wall time of each run and
each collection's search time; then first-time encoding of a sample of every collection's documents, ours against
sentence-transformers' encode on the same texts.

    HF_HUB_OFFLINE=1 python bench/benchmark.py [--benchmark offline] [--sample 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import best_seconds, machine, token_lengths
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from sentence_transformers import SentenceTransformer

from retrieval_exp.benchmark import collections
from retrieval_exp.data import irds
from retrieval_exp.data.local import register_beir_folder
from retrieval_exp.models.bi_encoder import BiEncoder

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
REPO = Path(__file__).resolve().parents[1]


def evaluate_twice(
    benchmark: str, scratch: Path, cache: Path, overrides: list[str]
) -> list[tuple[float, dict[str, float]]]:
    """(wall seconds, MLflow metrics) of a cold and a warm zero-shot run sharing the embedding cache `cache`."""
    measured = []
    for name in ("cold", "warm"):
        command = [sys.executable, "launch.py", "experiment=zero_shot", f"benchmark={benchmark}"]
        command += [f"eval.embedding_cache={cache}", f"hydra.run.dir={scratch}/{name}"]
        command += [f"tracking.uri=sqlite:///{scratch}/mlflow.db", f"tracking.artifact_root={scratch}/artifacts"]
        command += overrides
        started = time.perf_counter()
        subprocess.run(command, cwd=REPO, check=True, capture_output=True)
        seconds = time.perf_counter() - started
        client = MlflowClient(f"sqlite:///{scratch}/mlflow.db")
        experiments = [e.experiment_id for e in client.search_experiments()]
        latest = client.search_runs(experiments, order_by=["attributes.start_time DESC"])[0]
        measured.append((seconds, latest.data.metrics))
    return measured


def sample_documents(benchmark: str, count: int, overrides: list[str]) -> list[str]:
    """The first `count` documents of every collection of the benchmark."""
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"benchmark={benchmark}", *overrides])
    texts = []
    for collection in collections(cfg):
        if collection.folder:
            register_beir_folder(collection.test, collection.folder, collection.split)
        texts += irds.corpus(collection.test).texts[:count]
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default="offline")
    parser.add_argument("--model", default=MODEL, help="the model of the encoding race (the run's is model=...)")
    parser.add_argument("--sample", type=int, default=64, help="documents of each collection for the encoding race")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cache", type=Path, help="an empty embedding cache to fill (default: a temporary one)")
    parser.add_argument("overrides", nargs="*", help="more launch.py overrides, e.g. hardware.encode_batch_size=32")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        cache = args.cache or Path(scratch) / "vectors"
        if cache.is_dir() and any(cache.iterdir()):
            raise SystemExit(f"--cache {cache} is not empty: the first run would not be cold")
        (cold_s, cold), (warm_s, warm) = evaluate_twice(args.benchmark, Path(scratch), cache, args.overrides)
    names = [key.removesuffix("/time/search_s") for key in cold if key.endswith("/time/search_s")]
    print(f"experiment=zero_shot benchmark={args.benchmark} {' '.join(args.overrides)}; {machine('cpu')}")
    print(f"{'':12}{'queries':>8}{'cold search s':>15}{'warm search s':>15}{'nDCG@10 cold / warm':>22}")
    for name in names:
        ndcg = f"{cold[f'{name}/nDCG_at_10']:.4f} / {warm[f'{name}/nDCG_at_10']:.4f}"
        seconds = f"{cold[f'{name}/time/search_s']:15.1f}{warm[f'{name}/time/search_s']:15.1f}"
        print(f"{name:12}{int(cold[f'{name}/queries']):>8}{seconds}{ndcg:>22}")
    print(f"whole run (wall, model load and start-up checks included): cold {cold_s:.0f} s, warm {warm_s:.0f} s")
    print(f"retrieval (time/retrieve_s): cold {cold['time/retrieve_s']:.0f} s, warm {warm['time/retrieve_s']:.0f} s")

    texts = sample_documents(args.benchmark, args.sample, args.overrides)
    ours, peer = BiEncoder(args.model), SentenceTransformer(args.model, device="cpu")
    peer.max_seq_length = ours.lengths["doc"]
    with torch.inference_mode():
        best = best_seconds(
            {
                "retrieval_exp": lambda: ours.embed(texts, "doc", args.batch_size),
                "sentence-transformers": lambda: peer.encode(texts, batch_size=args.batch_size),
            },
            args.repeats,
        )
    tokens = sum(token_lengths(ours.tokenizer, texts, ours.lengths["doc"]))
    print(f"first-time encoding, {len(texts)} documents ({args.sample} of each collection), {tokens} tokens:")
    for name, seconds in best.items():
        print(f"  {name:24}{len(texts) / seconds:8.1f} docs/s")
    print(f"  ratio (ours / peer): {best['sentence-transformers'] / best['retrieval_exp']:.2f}x")


if __name__ == "__main__":
    main()
