"""Teacher-score baselines: losses by hand, the teacher's score cache, and teacher scores reaching the batches."""

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from retrieval_exp.batches import Triple, TripleBatch, TripleEmbeddings
from retrieval_exp.data.local import register_all
from retrieval_exp.data.teacher import TeacherScores
from retrieval_exp.data.triples import MinedTriples
from retrieval_exp.hardware import Hardware
from retrieval_exp.losses.distillation import KLDistill, MarginMSE
from retrieval_exp.retrieval.bm25 import BM25
from tests.conftest import TINY, compose_config

# student scores (dot products): q0 -> [d+ .6, d- 0], q1 -> [d+ 1, d- .6]; teacher scores [[2, 1], [3, 0]]
OUTPUT = TripleEmbeddings(
    torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
    torch.tensor([[0.6, 0.8], [0.0, 1.0]]),
    torch.tensor([[[0.0, 1.0]], [[0.8, 0.6]]]),
)
BATCH = TripleBatch(None, None, 1, torch.tensor([[2.0, 1.0], [3.0, 0.0]]))  # type: ignore[arg-type]


def test_margin_mse_by_hand() -> None:
    expected = ((0.6 - 1) ** 2 + (0.4 - 3) ** 2) / 2
    assert MarginMSE().compute_loss(OUTPUT, BATCH).item() == pytest.approx(expected, abs=1e-6)


def softmax(values: list[float]) -> list[float]:
    total = sum(math.exp(v) for v in values)
    return [math.exp(v) / total for v in values]


def test_kl_distill_by_hand() -> None:
    def kl(teacher: list[float], student: list[float]) -> float:
        p, q = softmax(teacher), softmax(student)
        return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))

    expected = (kl([2, 1], [0.6, 0]) + kl([3, 0], [1, 0.6])) / 2
    loss = KLDistill(temperature=1.0, teacher_temperature=1.0)
    assert loss.compute_loss(OUTPUT, BATCH).item() == pytest.approx(expected, abs=1e-6)


def test_kl_is_zero_when_student_matches_teacher() -> None:
    batch = TripleBatch(None, None, 1, torch.tensor([[0.6, 0.0], [1.0, 0.6]]))  # type: ignore[arg-type]
    assert KLDistill(temperature=1.0, teacher_temperature=1.0).compute_loss(OUTPUT, batch).item() == pytest.approx(0)


def tiny_sampler() -> MinedTriples:
    cfg = compose_config(*TINY)
    register_all(cfg.data.register)
    return MinedTriples("tiny/train", BM25(), negatives=2, depth=5)


def test_teacher_scores_are_cached_and_reach_every_example(tmp_path: Path) -> None:
    teacher_config = OmegaConf.to_container(compose_config(*TINY).model, resolve=True)
    teacher = TeacherScores(teacher_config, tmp_path, Hardware())
    samples = tiny_sampler()
    samples.attach_teacher(teacher)
    [cache] = list(tmp_path.glob("*.tsv"))
    examples = samples.epoch(0)
    assert all(len(t.teacher_scores) == 3 for t in examples)

    stamp = cache.stat().st_mtime_ns
    again = tiny_sampler()
    again.attach_teacher(TeacherScores(teacher_config, tmp_path, Hardware()))
    assert cache.stat().st_mtime_ns == stamp and list(again.epoch(0)) == list(examples)


def test_collate_stacks_teacher_scores() -> None:
    from hydra.utils import instantiate

    model = instantiate(compose_config(*TINY).model)
    batch = model.collate([Triple("q", "d", ("n",), (2.0, 1.0)), Triple("q", "d", ("n",), (3.0, 0.0))])
    assert batch.teacher_scores.tolist() == [[2.0, 1.0], [3.0, 0.0]]
    assert model.collate([Triple("q", "d", ("n",))]).teacher_scores is None
