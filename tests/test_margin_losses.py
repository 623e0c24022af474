"""Margin losses against values computed by hand, and the paper's invariants.

Fixture (unit vectors, one negative each): q0=(1,0) q1=(0,1); d+0=(.6,.8) d+1=(0,1); d-0=(0,1) d-1=(.8,.6).
cos(q_i, d+_i) = .6, 1; cos(q_i, d-_j) = [[0, .8], [1, .6]]; cos(d+_i, d-_j) = [[.8, .96], [1, .6]].
"""

import math

import pytest
import torch

from retrieval_exp.batches import TripleEmbeddings
from retrieval_exp.errors import UserError
from retrieval_exp.losses.margin import AdaptiveMargin, DistributedMargin, StaticMargin
from tests.fakes import UNMASKED


def triples(requires_grad: bool = False) -> TripleEmbeddings:
    def t(rows: list) -> torch.Tensor:
        return torch.tensor(rows, requires_grad=requires_grad)

    return TripleEmbeddings(t([[1.0, 0.0], [0.0, 1.0]]), t([[0.6, 0.8], [0.0, 1.0]]), t([[[0.0, 1.0]], [[0.8, 0.6]]]))


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


# own margins m = [.6, .4]; adaptive targets cos(d+_i, d-_i)/2 + .5 = [.9, .8]
@pytest.mark.parametrize(
    ("error_fn", "expected"),
    [
        ("l2", mean([0.3**2, 0.4**2])),
        ("l1", mean([0.3, 0.4])),
        ("soft", mean([math.log1p(math.exp(0.3)), math.log1p(math.exp(0.4))])),
    ],
)
def test_adaptive_own_negatives(error_fn: str, expected: float) -> None:
    assert AdaptiveMargin(error_fn=error_fn).compute_loss(triples(), UNMASKED).item() == pytest.approx(
        expected, abs=1e-6
    )


def test_adaptive_in_batch_is_b_by_b() -> None:
    # m[i,j] = cos(q_i,d+_i) - cos(q_i,d-_j) = [[.6, -.2], [0, .4]]; t[i,j] = [[.9, .98], [1, .8]]
    loss = AdaptiveMargin(in_batch=True)
    assert loss.margins(triples()).shape == (2, 2)
    expected = mean([0.3**2, 1.18**2, 1.0**2, 0.4**2])
    assert loss.compute_loss(triples(), UNMASKED).item() == pytest.approx(expected, abs=1e-6)


def test_static_with_and_without_in_batch() -> None:
    assert StaticMargin(margin=0.5).compute_loss(triples(), UNMASKED).item() == pytest.approx(mean([0.01, 0.01]))
    in_batch = StaticMargin(margin=0.5, in_batch=True).compute_loss(triples(), UNMASKED).item()
    assert in_batch == pytest.approx(mean([0.1**2, 0.7**2, 0.5**2, 0.1**2]), abs=1e-6)


def test_the_authors_in_batch_form_takes_each_negatives_own_positive() -> None:
    # m[i,j] = cos(q_j,d+_j) - cos(q_i,d-_j) = [[.6 - 0, 1 - .8], [.6 - 1, 1 - .6]] = [[.6, .2], [-.4, .4]]
    static = StaticMargin(margin=0.5, in_batch=True, in_batch_form="authors")
    torch.testing.assert_close(static.margins(triples()), torch.tensor([[0.6, 0.2], [-0.4, 0.4]]))
    assert static.compute_loss(triples(), UNMASKED).item() == pytest.approx(mean([0.01, 0.09, 0.81, 0.01]), abs=1e-6)
    adaptive = AdaptiveMargin(in_batch=True, in_batch_form="authors")  # the same targets [[.9, .98], [1, .8]]
    expected = mean([0.3**2, 0.78**2, 1.4**2, 0.4**2])
    assert adaptive.compute_loss(triples(), UNMASKED).item() == pytest.approx(expected, abs=1e-6)
    own = AdaptiveMargin(in_batch_form="authors").compute_loss(triples(), UNMASKED)  # no in-batch: no difference
    assert own.item() == pytest.approx(AdaptiveMargin().compute_loss(triples(), UNMASKED).item())
    with pytest.raises(UserError, match="loss.in_batch_form='code' is not one of paper, authors"):
        StaticMargin(in_batch_form="code")


def test_distributed_broadcasts_each_margin_over_all_positives() -> None:
    # e[i,j] = m_j - t[i,j], m = [.6, .4], t = [[.9, .98], [1, .8]]
    expected = mean([0.3**2, 0.58**2, 0.4**2, 0.4**2])
    assert DistributedMargin().compute_loss(triples(), UNMASKED).item() == pytest.approx(expected, abs=1e-6)


def test_distributed_under_l2_is_distance_to_mean_target_plus_variance() -> None:
    output = TripleEmbeddings(torch.randn(5, 8), torch.randn(5, 8), torch.randn(5, 1, 8))
    loss = DistributedMargin()
    margins, targets = loss.margins(output)[0], loss.targets(output)
    closed_form = ((margins - targets.mean(0)) ** 2 + targets.var(0, unbiased=False)).mean()
    assert loss.compute_loss(output, UNMASKED).item() == pytest.approx(closed_form.item(), abs=1e-5)


def test_distributed_refuses_in_batch() -> None:
    with pytest.raises(UserError, match="does not support in_batch"):
        DistributedMargin(in_batch=True)


@pytest.mark.parametrize("in_batch", [False, True])
def test_adaptive_equals_static_when_every_doc_similarity_is_2c_minus_1(in_batch: bool) -> None:
    # cos(d+_i, d-_j) = .5 for all i, j, so the adaptive target is .5/2 + .5 = .75 everywhere.
    negative = [0.5, 0.5, 0.5**0.5]
    output = TripleEmbeddings(
        torch.randn(2, 3), torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), torch.tensor([[negative], [negative]])
    )
    adaptive = AdaptiveMargin(in_batch=in_batch).compute_loss(output, UNMASKED)
    static = StaticMargin(margin=0.75, in_batch=in_batch).compute_loss(output, UNMASKED)
    assert adaptive.item() == pytest.approx(static.item(), abs=1e-6)


def test_several_negatives_give_one_margin_each() -> None:
    output = TripleEmbeddings(torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 2, 4))
    assert AdaptiveMargin().margins(output).shape == (3, 2)
    assert AdaptiveMargin(in_batch=True).margins(output).shape == (3, 6)
    assert DistributedMargin().margins(output).shape == (1, 6)


def positive_gradient(loss: AdaptiveMargin | DistributedMargin) -> torch.Tensor:
    output = triples(requires_grad=True)
    loss.compute_loss(output, UNMASKED).backward()
    return output.positives.grad


@pytest.mark.parametrize("loss_class", [AdaptiveMargin, DistributedMargin])
def test_gradient_reaches_the_target_documents_unless_detached(loss_class: type) -> None:
    attached = positive_gradient(loss_class())
    detached = positive_gradient(loss_class(detach_target=True))
    assert not torch.allclose(attached, detached)  # the target's cos(d+, d-) carries gradient
    # Detached, the only path to d+ left is the margin's cos(q, d+): the same gradient as a constant target.
    output = triples(requires_grad=True)
    loss = loss_class()
    with torch.no_grad():
        constant = loss.targets(triples())
    loss.error(loss.margins(output) - constant).mean().backward()
    assert torch.allclose(detached, output.positives.grad)
