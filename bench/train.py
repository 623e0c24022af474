"""Bi-encoder training throughput and peak memory: retrieval_exp's training loop with InfoNCE (in-batch plus one hard
negative per query) against sentence-transformers' trainer with MultipleNegativesRankingLoss, the same loss; with
`--cache-chunk N`, both through a gradient cache of N texts (ours: trainer.cache_chunk; the peer:
CachedMultipleNegativesRankingLoss, mini_batch_size N).

Same model (all-MiniLM-L6-v2, mean pooling, normalised), same triples in the same order (SciFact train: query,
relevant document, one seeded random non-relevant document as the hard negative), batch size and max length, AdamW
at lr 2e-5 (ours: the suite's default, conf/optim/adamw.yaml; the peer: its Trainer's default; both fused), a linear
schedule, gradient clipping at 1.0, CPU fp32. Each contender trains in a fresh process per round, and the rounds
alternate; examples/s counts the steps after `--warmup`, timed at each step's end, and the best round counts. Peak
memory is the process's resident high-water mark while it trains, above its size once the data are loaded (so the
model is counted). Before timing, the script checks that both compute the same loss on the same batch (eval mode).

    HF_HUB_OFFLINE=1 python bench/train.py [--batch-size 16] [--max-length 128] [--steps 10] [--repeats 5]
                                           [--cache-chunk N]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from functools import partial
from itertools import zip_longest
from pathlib import Path

import torch
from common import forward_flops, machine, peak_memory, reset_peak_memory, token_lengths
from hydra.utils import instantiate
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoTokenizer

from retrieval_exp.batches import BatchShape, Triple
from retrieval_exp.data import irds
from retrieval_exp.hardware import Hardware
from retrieval_exp.interfaces import Sampler
from retrieval_exp.losses.contrastive import InfoNCE
from retrieval_exp.models.bi_encoder import BiEncoder
from retrieval_exp.training.loop import TrainerSettings, train
from retrieval_exp.training.schedule import warmup_decay

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
OPTIMIZER = Path(__file__).parents[1] / "conf" / "optim" / "adamw.yaml"  # the suite's default: fused AdamW
LEARNING_RATE = 2e-5
MiB = 2**20
SCIFACT = "beir/scifact/train"
LOSS = InfoNCE(temperature=0.05, mask_false_negatives=False)  # the peer's MNRL: a repeated document stays a negative


def training_triples(count: int, dataset: str = SCIFACT, seed: int = 0) -> list[Triple]:
    """`count` train triples of `dataset`: its relevant pairs taken round-robin over the queries (every query's
    first relevant document, then every second one ...), so that no query repeats within a batch smaller than the
    number of queries; each with a seeded random non-relevant document."""
    corpus = irds.corpus(dataset)
    texts = dict(zip(corpus.ids, corpus.texts))
    queries = irds.queries(dataset)
    qrels = irds.qrels(dataset)
    per_query = [[(q, d) for d, label in docs.items() if label > 0] for q, docs in qrels.items()]
    relevant = [pair for rank in zip_longest(*per_query) for pair in rank if pair is not None]
    rng = random.Random(seed)
    triples = []
    for query_id, doc_id in relevant[:count]:
        negative = rng.choice(corpus.ids)
        while qrels[query_id].get(negative, 0) > 0:
            negative = rng.choice(corpus.ids)
        triples.append(Triple(queries[query_id], texts[doc_id], (texts[negative],)))
    if len(triples) < count:
        raise SystemExit(f"{dataset} has {len(triples)} relevant pairs; ask for fewer steps or a smaller batch")
    return triples


def training_flops(triples: list[Triple], max_length: int) -> float:
    """Useful FLOPs of one pass over `triples`: three forward passes' worth (forward, then backward at twice it)."""
    texts = [text for t in triples for text in (t.query, t.positive, *t.negatives)]
    lengths = token_lengths(AutoTokenizer.from_pretrained(MODEL), texts, max_length)
    return 3 * forward_flops(AutoConfig.from_pretrained(MODEL), lengths)


class InOrder(Sampler):
    """The training loop's samples: the same triples, in the same order, every epoch."""

    batch_shape = BatchShape.TRIPLES

    def __init__(self, triples: list[Triple]) -> None:
        super().__init__(seed=0)
        self.triples = triples

    def __len__(self) -> int:
        return len(self.triples)

    def epoch(self, _: int) -> list[Triple]:
        return self.triples


class StepClock:
    """The time at the end of each optimizer step."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def tick(self, *_: object, **__: object) -> None:
        self.ends.append(time.perf_counter())

    def examples_per_second(self, warmup: int, batch_size: int) -> float:
        timed = self.ends[warmup - 1 :]
        return (len(timed) - 1) * batch_size / (timed[-1] - timed[0])


def run_ours(triples: list[Triple], args: argparse.Namespace, clock: StepClock) -> None:
    model = BiEncoder(MODEL, query_length=args.max_length, doc_length=args.max_length)
    steps = args.warmup + args.steps
    settings = TrainerSettings(
        max_steps=steps,
        batch_size=args.batch_size,
        log_every=1,
        checkpoint_every=steps + 1,
        cache_chunk=args.cache_chunk,
    )
    with tempfile.TemporaryDirectory() as checkpoints:
        train(
            model,
            LOSS,
            InOrder(triples),
            instantiate(OmegaConf.load(OPTIMIZER), lr=LEARNING_RATE, weight_decay=0.0),
            partial(warmup_decay, warmup=0, decay="linear"),
            settings,
            Hardware(),
            Path(checkpoints),
            clock.tick,
        )


def peer_trainer(triples: list[Triple], args: argparse.Namespace, output_dir: str, clock: StepClock) -> object:
    """sentence-transformers' trainer on the same triples, in order, with the same optimiser settings."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.base.sampler import DefaultBatchSampler
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments
    from transformers import TrainerCallback

    class InOrderBatches(DefaultBatchSampler):
        """Batches of consecutive triples, in dataset order (the peer's default shuffles)."""

        def __iter__(self) -> Iterator[list[int]]:
            for start in range(0, len(self) * self.batch_size, self.batch_size):
                yield list(range(start, start + self.batch_size))

        def __len__(self) -> int:
            return len(triples) // self.batch_size

    class Clock(TrainerCallback):
        def on_step_end(self, *_: object, **__: object) -> None:
            clock.tick()

    model = SentenceTransformer(MODEL, device="cpu")
    model.max_seq_length = args.max_length
    columns = {
        "anchor": [t.query for t in triples],
        "positive": [t.positive for t in triples],
        "negative": [t.negatives[0] for t in triples],
    }
    training = SentenceTransformerTrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=args.batch_size,
        max_steps=args.warmup + args.steps,
        learning_rate=LEARNING_RATE,
        warmup_steps=0,
        lr_scheduler_type="linear",
        weight_decay=0.0,
        max_grad_norm=1.0,
        save_strategy="no",
        logging_steps=10**6,
        report_to="none",
        disable_tqdm=True,
        dataloader_drop_last=True,
        batch_sampler=InOrderBatches,
        use_cpu=True,
    )
    return SentenceTransformerTrainer(
        model=model,
        args=training,
        train_dataset=Dataset.from_dict(columns),
        loss=CachedMultipleNegativesRankingLoss(model, scale=20.0, mini_batch_size=args.cache_chunk)
        if args.cache_chunk
        else MultipleNegativesRankingLoss(model, scale=20.0),
        callbacks=[Clock()],
    )


def run_peer(triples: list[Triple], args: argparse.Namespace, clock: StepClock) -> None:
    with tempfile.TemporaryDirectory() as output_dir:
        peer_trainer(triples, args, output_dir, clock).train()


def same_loss(triples: list[Triple], args: argparse.Namespace) -> tuple[float, float]:
    """Both losses on the first batch, in eval mode (no dropout): they must agree."""
    batch = triples[: args.batch_size]
    ours = BiEncoder(MODEL, query_length=args.max_length, doc_length=args.max_length).eval()
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = peer_trainer(triples, args, output_dir, StepClock())
    peer = trainer.model.eval()
    columns = ([t.query for t in batch], [t.positive for t in batch], [t.negatives[0] for t in batch])
    with torch.inference_mode():
        tokens = ours.collate(batch)
        our_loss = LOSS.compute_loss(ours.training_output(tokens), tokens)
        peer_loss = trainer.loss([peer.preprocess(list(texts)) for texts in columns], None)
    return float(our_loss), float(peer_loss)


def contender(name: str, args: argparse.Namespace) -> None:
    """One round of one contender, in this process; prints a JSON line."""
    torch.manual_seed(0)
    triples = training_triples(args.batch_size * (args.warmup + args.steps), args.dataset)
    clock = StepClock()
    loaded = reset_peak_memory()
    (run_ours if name == "ours" else run_peer)(triples, args, clock)
    result = {"examples_per_second": clock.examples_per_second(args.warmup, args.batch_size)}
    print(json.dumps(result | {"peak_mib": peak_memory() / MiB, "extra_mib": (peak_memory() - loaded) / MiB}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2, help="steps before timing starts")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache-chunk", type=int, default=None, help="gradient cache of N texts (both sides)")
    parser.add_argument("--dataset", default=SCIFACT, help="ir_datasets id of the training triples")
    parser.add_argument("--contender", choices=["ours", "peer"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.contender:
        return contender(args.contender, args)

    triples = training_triples(args.batch_size * (args.warmup + args.steps), args.dataset)
    ours_loss, peer_loss = same_loss(triples, args)
    options = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k != "contender" and v is not None]
    rounds: dict[str, list[dict[str, float]]] = {"ours": [], "peer": []}
    for _ in range(args.repeats):
        for name in rounds:
            command = [sys.executable, __file__, f"--contender={name}", *options]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            rounds[name].append(json.loads(output.strip().splitlines()[-1]))

    per_example = training_flops(triples, args.max_length) / len(triples)
    print(f"{MODEL}; {machine('cpu')}")
    print(
        f"InfoNCE / MNRL with in-batch and 1 hard negative: batch {args.batch_size}, max length {args.max_length}, "
        f"{args.steps} timed steps after {args.warmup}, best of {args.repeats} rounds (fresh process each)"
    )
    print(f"first-batch loss in eval mode: ours {ours_loss:.6f}, peer {peer_loss:.6f}")
    print(f"{'':24}{'examples/s':>12}{'GFLOP/s':>10}{'peak MiB':>10}{'model+training MiB':>20}")
    best = {}
    for name, label in (("ours", "retrieval_exp"), ("peer", "sentence-transformers")):
        best[name] = max(r["examples_per_second"] for r in rounds[name])
        last = rounds[name][-1]
        gflops = best[name] * per_example / 1e9
        print(f"{label:24}{best[name]:12.2f}{gflops:10.1f}{last['peak_mib']:10.0f}{last['extra_mib']:20.0f}")
    print(f"ratio (ours / peer): {best['ours'] / best['peer']:.2f}x")


if __name__ == "__main__":
    main()
