"""CONTRIBUTING.md's checklists, followed once: a new loss and a new sampler, each written as the files its checklist
names and no others (here in a folder outside the repository, on PYTHONPATH and on Hydra's search path), train and
evaluate through `launch.py` like the shipped ones, and are checked at start-up like them."""

import json
import os
import subprocess
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.conftest import REPO, TEST_CONF, launch_command

TOY_LOSS = '''"""A hinge on each query's positive's margin over its own negatives: the contributing guide's toy loss."""

import torch

from retrieval_exp.batches import BatchShape, TripleBatch, TripleEmbeddings
from retrieval_exp.interfaces import ModelKind
from retrieval_exp.losses.base import Loss
from retrieval_exp.settings import NonNegativeFloat


class Hinge(Loss):
    name = "toy_hinge"
    batch_shape = BatchShape.TRIPLES
    model_kinds = (ModelKind.BI_ENCODER,)

    def __init__(self, margin: NonNegativeFloat = 0.2) -> None:
        self.margin = margin

    def compute_loss(self, output: TripleEmbeddings, batch: TripleBatch) -> torch.Tensor:
        positive = (output.queries * output.positives).sum(-1, keepdim=True)
        negatives = (output.queries.unsqueeze(1) * output.negatives).sum(-1)
        return torch.relu(self.margin - positive + negatives).mean()
'''

TOY_SAMPLER = '''"""Triples with negatives drawn uniformly from the corpus: the contributing guide's toy sampler."""

from retrieval_exp.batches import BatchShape, Triple
from retrieval_exp.data import irds
from retrieval_exp.interfaces import Sampler
from retrieval_exp.settings import Positive


class RandomNegatives(Sampler):
    batch_shape = BatchShape.TRIPLES
    requires = ("docs", "queries", "qrels")

    def __init__(self, dataset: str, negatives: Positive, seed: int) -> None:
        super().__init__(seed)
        corpus, queries = irds.corpus(dataset), irds.queries(dataset)
        self.texts = dict(zip(corpus.ids, corpus.texts))
        self.pairs = [(queries[q], d) for q, docs in sorted(irds.qrels(dataset).items()) for d in docs if q in queries]
        self.negatives = negatives
        self.report = {"data/toy_pairs": float(len(self.pairs))}

    def __len__(self) -> int:
        return len(self.pairs)

    def epoch(self, epoch: int) -> list[Triple]:
        rng = self.epoch_rng(epoch)
        ids = sorted(self.texts)
        return [
            Triple(query, self.texts[positive], tuple(self.texts[d] for d in rng.sample(ids, self.negatives)))
            for query, positive in rng.sample(self.pairs, len(self.pairs))
        ]
'''

CONFIGS = {
    "loss/toy_hinge.yaml": "_target_: toy_ext.hinge.Hinge\nmargin: 0.2\n",
    "data/toy_random.yaml": (
        "name: toy_random\ntest: tiny/test\ntrain:\n  _target_: toy_ext.random_negatives.RandomNegatives\n"
        "  dataset: tiny/train\n  negatives: 2\n  seed: ${seed}\n"
        "register:\n  tiny/train: {folder: tests/data/tiny, split: train}\n"
        "  tiny/test: {folder: tests/data/tiny, split: test}\n"
    ),
}


def _extension(root: Path) -> Path:
    """The two checklists' files: the modules (a package on PYTHONPATH) and their configs (on the search path)."""
    (root / "toy_ext").mkdir(parents=True)
    (root / "toy_ext" / "__init__.py").write_text("")
    (root / "toy_ext" / "hinge.py").write_text(TOY_LOSS)
    (root / "toy_ext" / "random_negatives.py").write_text(TOY_SAMPLER)
    for name, text in CONFIGS.items():
        (root / "conf" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "conf" / name).write_text(text)
    return root


def _launch(workdir: Path, extension: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    command = [
        f"hydra.searchpath=[file://{TEST_CONF},file://{extension / 'conf'}]"
        if part.startswith("hydra.searchpath=")
        else part
        for part in launch_command(workdir, *overrides)
    ]
    env = {**os.environ, "PYTHONPATH": f"{extension}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)


def test_a_new_loss_and_a_new_sampler_train_with_the_files_the_checklists_name(tmp_path: Path) -> None:
    extension = _extension(tmp_path / "extension")
    done = _launch(tmp_path, extension, "loss=toy_hinge", "data=toy_random", "trainer.max_steps=3")
    assert done.returncode == 0, done.stderr[-3000:]
    assert 0 <= json.loads((tmp_path / "run" / "metrics.json").read_text())["nDCG@10"] <= 1
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("toy_random").experiment_id])  # named by the data
    assert run.data.tags["method"] == "toy_hinge" and run.data.metrics["data/toy_pairs"] > 0
    assert "train/loss" in run.data.metrics


def test_the_new_loss_is_checked_at_start_up_like_a_shipped_one(tmp_path: Path) -> None:
    extension = _extension(tmp_path / "extension")
    done = _launch(tmp_path, extension, "loss=toy_hinge", "loss.margin=-1")
    assert done.returncode == 2 and "loss.margin=-1 is out of range: it must be >= 0" in done.stderr
