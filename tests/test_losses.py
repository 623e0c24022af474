"""InfoNCE against values computed by hand on tiny tensors."""

import math

import pytest
import torch

from retrieval_exp.batches import TripleEmbeddings
from retrieval_exp.losses.contrastive import InfoNCE
from tests.fakes import UNMASKED


def embeddings(requires_grad: bool = False) -> TripleEmbeddings:
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positives = torch.tensor([[1.0, 0.0], [0.6, 0.8]], requires_grad=requires_grad)
    negatives = torch.tensor([[[0.0, 1.0]], [[1.0, 0.0]]])
    return TripleEmbeddings(queries, positives, negatives)


def nll(scores: list[float], target: int) -> float:
    return -math.log(math.exp(scores[target]) / sum(math.exp(s) for s in scores))


def test_in_batch_matches_hand_computation() -> None:
    # q0 against [p0, p1, n0, n1] = [1, 0.6, 0, 1]; q1 against them = [0, 0.8, 1, 0].
    expected = (nll([1, 0.6, 0, 1], 0) + nll([0, 0.8, 1, 0], 1)) / 2
    value = InfoNCE(temperature=1.0).compute_loss(embeddings(), UNMASKED)
    assert value.item() == pytest.approx(expected, abs=1e-6)


def test_own_negatives_only_matches_hand_computation() -> None:
    expected = (nll([1, 0], 0) + nll([0.8, 0], 0)) / 2
    value = InfoNCE(temperature=1.0, in_batch=False).compute_loss(embeddings(), UNMASKED)
    assert value.item() == pytest.approx(expected, abs=1e-6)


def test_temperature_divides_scores() -> None:
    expected = (nll([2, 1.2, 0, 2], 0) + nll([0, 1.6, 2, 0], 1)) / 2
    assert InfoNCE(temperature=0.5).compute_loss(embeddings(), UNMASKED).item() == pytest.approx(expected, abs=1e-6)


def test_gradient_raises_the_positive_score() -> None:
    output = embeddings(requires_grad=True)
    InfoNCE().compute_loss(output, UNMASKED).backward()
    # Descending the gradient moves p1 towards q1 = (0, 1): its second coordinate must grow.
    assert output.positives.grad is not None and output.positives.grad[1, 1] < 0


def test_one_query_batch_is_the_same_with_and_without_in_batch() -> None:
    single = TripleEmbeddings(torch.tensor([[0.6, 0.8]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[[0.0, 1.0]]]))
    with_batch = InfoNCE(in_batch=True).compute_loss(single, UNMASKED)
    without = InfoNCE(in_batch=False).compute_loss(single, UNMASKED)
    assert with_batch.item() == pytest.approx(without.item())
