"""What a lent GPU is for, in one run: bf16 against fp32 on one batch of each model kind, then bf16 throughput of
encoding, an InfoNCE training step, re-ranking and a Revela step, ours against sentence-transformers where it does the
same work (Revela has no peer); one table.

The models are all-MiniLM-L6-v2 (bi-encoder; cross-encoder with a fresh one-logit head, as bench/rerank.py) and
SmolLM2-135M-Instruct as Revela's LM; the texts are random words of the model's own vocabulary, `--words` long, so
that nothing but the models is needed. bench/gpu_check.sh runs it at paper-like sizes in about 3 minutes on an H100;
the tests run it on the CPU with config-built tiny models and a few texts, so that it does not rot.

    python bench/gpu_check.py [--device cuda] [--texts 4096] [--batch 256] [--train-batch 64] [--groups 8]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from common import machine

from retrieval_exp.batches import Triple
from retrieval_exp.hardware import Hardware
from retrieval_exp.losses.contrastive import InfoNCE
from retrieval_exp.losses.lm_supervised import RevelaLoss
from retrieval_exp.models.bi_encoder import BiEncoder
from retrieval_exp.models.cross_encoder import CrossEncoder
from retrieval_exp.models.revela import Revela

BERT = "sentence-transformers/all-MiniLM-L6-v2"
LM = "HuggingFaceTB/SmolLM2-135M-Instruct"


def random_texts(tokenizer: Any, count: int, words: int, seed: int = 0) -> list[str]:
    """`count` texts of about `words` whole words drawn from the tokenizer's vocabulary."""
    vocabulary = sorted(w for w in tokenizer.get_vocab() if w.isalpha() and len(w) > 2)
    rng = random.Random(seed)
    return [" ".join(rng.choices(vocabulary, k=rng.randint(words // 2, words))) for _ in range(count)]


def training_step(model: Any, loss: Any, batch: Any, hardware: Hardware) -> float:
    """One forward and backward pass under `hardware`'s precision, the gradients then dropped (no update, so that
    the next call sees the same weights); the loss."""
    with hardware.autocast():
        value = loss.compute_loss(model.training_output(batch), batch)
    value.backward()
    model.zero_grad(set_to_none=True)
    return float(value.detach())


def on_device(features: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in features.items()}


def spearman(first: torch.Tensor, second: torch.Tensor) -> float:
    """The rank correlation of two score vectors (ties broken by position)."""
    ranks = [values.argsort().argsort().double() for values in (first, second)]
    return torch.corrcoef(torch.stack(ranks))[0, 1].item()


def seconds_per_call(work: Callable[[], object], device: torch.device, repeats: int) -> float:
    """The best of `repeats` timed calls after one warm-up call (synchronised on a GPU)."""
    best = float("inf")
    for round_ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if round_:
            best = min(best, time.perf_counter() - started)
    return best


class Check:
    """The checks of one invocation, each printing its table rows."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.device = args, torch.device(args.device)
        self.bf16 = Hardware(device=args.device, precision="bf16", encode_batch_size=args.batch)
        self.fp32 = Hardware(device=args.device, precision="fp32", encode_batch_size=args.batch)

    def row(self, what: str, ours: str, peer: str = "", note: str = "") -> None:
        print(f"| {what} | {ours} | {peer} | {note} |", flush=True)

    def precisions(self, what: str, step: Callable[[Hardware], float]) -> None:
        """The row comparing one step's loss in bf16 with its loss in fp32."""
        fp32, bf16 = step(self.fp32), step(self.bf16)
        self.row(what, f"loss {bf16:.4f} vs {fp32:.4f} ({abs(bf16 - fp32) / fp32:.2%})")

    def rate(self, count: int, unit: str, work: Callable[[], object]) -> str:
        return f"{count / seconds_per_call(work, self.device, self.args.repeats):,.1f} {unit}/s"

    def bi_encoder(self, texts: list[str]) -> None:
        from sentence_transformers import SentenceTransformer

        ours = BiEncoder(self.args.bert, doc_length=self.args.max_length).to(self.device).eval()
        with torch.inference_mode():
            fp32 = ours.embed(texts[: self.args.batch], "doc", self.args.batch, self.fp32.autocast)
            bf16 = ours.embed(texts[: self.args.batch], "doc", self.args.batch, self.bf16.autocast)
            cosine = torch.nn.functional.cosine_similarity(fp32, bf16.float()).min().item()
            self.row("bi-encoder bf16 vs fp32", f"min cosine {cosine:.6f}", note=f"{self.args.batch} texts")
            peer = SentenceTransformer(self.args.bert, device=self.args.device)
            peer.max_seq_length = self.args.max_length

            def peer_encode() -> object:
                with self.bf16.autocast():
                    return peer.encode(texts, batch_size=self.args.batch, show_progress_bar=False)

            ours_rate = self.rate(
                len(texts), "docs", lambda: ours.embed(texts, "doc", self.args.batch, self.bf16.autocast)
            )
            self.row("encode (bf16)", ours_rate, self.rate(len(texts), "docs", peer_encode), "s-t: encode()")
        self.train_step(ours, texts)

    def train_step(self, ours: BiEncoder, texts: list[str]) -> None:
        """InfoNCE with in-batch and one hard negative per query: ours against s-t's MultipleNegativesRankingLoss."""
        from sentence_transformers import SentenceTransformer, losses

        size = self.args.train_batch
        triples = [Triple(texts[i][:64], texts[size + i], (texts[2 * size + i],)) for i in range(size)]
        ours.train()
        loss = InfoNCE(temperature=0.05, mask_false_negatives=False)
        batch = ours.collate(triples).to(self.device)

        ours_step = partial(training_step, ours, loss, batch)
        ours.eval()  # no dropout: the two precisions see the same network
        self.precisions("InfoNCE step bf16 vs fp32", ours_step)
        ours.train()
        peer = SentenceTransformer(self.args.bert, device=self.args.device)
        peer.max_seq_length = self.args.max_length
        peer_loss = losses.MultipleNegativesRankingLoss(peer, scale=20.0)
        columns = [[t.query for t in triples], [t.positive for t in triples], [t.negatives[0] for t in triples]]
        features = [on_device(peer.tokenize(column), self.device) for column in columns]

        def peer_step() -> None:
            with self.bf16.autocast():
                value = peer_loss(features, None)
            value.backward()
            peer.zero_grad(set_to_none=True)

        ours_rate = self.rate(size, "examples", lambda: ours_step(self.bf16))
        self.row("InfoNCE train step (bf16)", ours_rate, self.rate(size, "examples", peer_step), f"batch {size}")

    def cross_encoder(self, texts: list[str]) -> None:
        from sentence_transformers.cross_encoder import CrossEncoder as PeerCrossEncoder

        ours = CrossEncoder(self.args.bert, doc_length=self.args.max_length).to(self.device).eval()
        queries = {str(i): texts[i][:64] for i in range(len(texts) // 16 or 1)}
        documents = {str(i): text for i, text in enumerate(texts)}
        pairs = [(str(i % len(queries)), str(i)) for i in range(len(texts))]
        with torch.inference_mode():
            head = pairs[: self.args.batch]
            fp32 = torch.tensor(ours.score_pairs(queries, documents, head, self.args.batch, self.fp32.autocast))
            bf16 = torch.tensor(ours.score_pairs(queries, documents, head, self.args.batch, self.bf16.autocast))
            difference = (fp32 - bf16).abs().max().item()
            self.row("cross-encoder bf16 vs fp32", f"Spearman {spearman(fp32, bf16):.4f}, max diff {difference:.4f}")
            peer = PeerCrossEncoder(
                self.args.bert, num_labels=1, max_length=self.args.max_length, device=self.args.device
            )
            texts_of = [(queries[q], documents[d]) for q, d in pairs]

            def peer_predict() -> object:
                with self.bf16.autocast():
                    return peer.predict(texts_of, batch_size=self.args.batch, show_progress_bar=False)

            ours_rate = self.rate(
                len(pairs),
                "pairs",
                lambda: ours.score_pairs(queries, documents, pairs, self.args.batch, self.bf16.autocast),
            )
            self.row("re-rank (bf16)", ours_rate, self.rate(len(pairs), "pairs", peer_predict), "s-t: predict()")

    def revela(self, texts: list[str]) -> None:
        lengths = {"query_length": self.args.max_length, "doc_length": self.args.max_length}
        model = Revela(self.args.bert, self.args.lm, lengths, freeze_lm=True, chunk_length=self.args.max_length // 2)
        model.to(self.device).eval()
        loss = RevelaLoss()
        groups = [tuple(texts[16 * g + i] for i in range(16)) for g in range(self.args.groups)]
        batch = model.collate(groups).to(self.device)

        step = partial(training_step, model, loss, batch)
        self.precisions("Revela step bf16 vs fp32", step)
        model.train()
        rate = self.rate(len(groups), "groups", lambda: step(self.bf16))
        self.row("Revela train step (bf16)", rate, "", f"{len(groups)} groups of 16, frozen LM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bert", default=BERT)
    parser.add_argument("--lm", default=LM)
    parser.add_argument("--texts", type=int, default=4096)
    parser.add_argument("--words", type=int, default=120)
    parser.add_argument("--batch", type=int, default=256, help="encoding and re-ranking batch")
    parser.add_argument("--train-batch", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--groups", type=int, default=8, help="Revela chunk groups per step")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    check = Check(args)
    from transformers import AutoTokenizer

    texts = random_texts(
        AutoTokenizer.from_pretrained(args.bert), max(args.texts, 3 * args.train_batch, 16 * args.groups), args.words
    )
    print(f"{machine(args.device)}; {args.bert}, {args.lm}; {len(texts)} texts of up to {args.words} words")
    print("| check | ours | sentence-transformers | note |\n|---|---|---|---|")
    check.bi_encoder(texts)
    check.cross_encoder(texts)
    check.revela(texts)


if __name__ == "__main__":
    main()
