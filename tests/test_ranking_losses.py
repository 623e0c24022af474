"""Method 2's losses over ranked lists against hand-computed values and the paper's invariants."""

import math

import pytest
import torch
import torch.nn.functional as F

from retrieval_exp.batches import ListBatch, ListScores
from retrieval_exp.errors import UserError
from retrieval_exp.losses.contrastive import InfoNCE
from retrieval_exp.losses.ranking import ApproxRankMSE, ListwiseInfoNCE, RankNet, SupervisedMarginMSE, ordered_pairs
from retrieval_exp.losses.weighted import WeightedSum


def batch(scores: list[list[float]], targets: list[list[float]]) -> tuple[ListScores, ListBatch]:
    return ListScores(torch.tensor(scores, requires_grad=True)), ListBatch(None, torch.tensor(targets))


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_ranknet_by_hand() -> None:
    output, lists = batch([[2.0, 1.0, 0.0]], [[3.0, 2.0, 1.0]])
    # pairs (0,1), (0,2), (1,2): margins 1, 2, 1
    expected = (softplus(-1) + softplus(-2) + softplus(-1)) / 3
    assert RankNet().compute_loss(output, lists).item() == pytest.approx(expected)
    hotter = (softplus(-2) + softplus(-4) + softplus(-2)) / 3  # temperature multiplies the margins
    assert RankNet(temperature=2.0).compute_loss(output, lists).item() == pytest.approx(hotter)


def test_ranknet_takes_only_ordered_pairs_and_averages_over_queries_pairs() -> None:
    output, lists = batch([[0.0, 1.0, 3.0], [1.0, 0.0, 5.0]], [[1.0, 1.0, 0.0], [2.0, 1.0, 0.0]])
    # query 1: ties give no pair: (0,2), (1,2); query 2: (0,1), (0,2), (1,2)
    margins = [-3.0, -2.0, 1.0, -4.0, -5.0]
    expected = sum(softplus(-m) for m in margins) / 5
    assert RankNet().compute_loss(output, lists).item() == pytest.approx(expected)


def test_one_hundred_distinct_ranks_give_4950_ranknet_pairs() -> None:
    targets = torch.randperm(100).float().unsqueeze(0)
    assert ordered_pairs(targets).sum().item() == 4950


def test_ranknet_gradient_raises_the_better_document() -> None:
    output, lists = batch([[0.0, 0.0]], [[1.0, 0.0]])
    RankNet().compute_loss(output, lists).backward()
    assert output.scores.grad[0, 0] < 0 < output.scores.grad[0, 1]  # descent raises doc 0, lowers doc 1


def test_all_tied_targets_give_zero_not_nan() -> None:
    output, lists = batch([[1.0, 2.0]], [[0.0, 0.0]])
    for loss in (RankNet(), SupervisedMarginMSE()):
        value = loss.compute_loss(output, lists)
        assert value.item() == 0 and value.requires_grad


@pytest.mark.parametrize(
    ("discount", "weight_of_rank_2"), [("log2", 1 / math.log2(3)), ("reciprocal", 0.5), ("none", 1.0)]
)
def test_adr_mse_by_hand(discount: str, weight_of_rank_2: float) -> None:
    output, lists = batch([[0.0, 0.0]], [[1.0, 0.0]])
    # approximate ranks 1 + sigmoid(0) = 1.5 for both; target ranks 1 and 2; errors 0.25 each
    expected = (0.25 * 1.0 + 0.25 * weight_of_rank_2) / 2  # 1/log2(1 + 1) = 1/1 = 1 for rank 1
    assert ApproxRankMSE(discount=discount).compute_loss(output, lists).item() == pytest.approx(expected)


def test_adr_mse_approximate_rank_by_hand() -> None:
    scores, targets = [[1.0, 0.0, 2.0]], [[3.0, 2.0, 1.0]]
    output, lists = batch(scores, targets)
    s = scores[0]
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    approximate = [1 + sum(sigmoid(s[j] - s[i]) for j in range(3) if j != i) for i in range(3)]
    expected = sum((a - r) ** 2 for a, r in zip(approximate, [1, 2, 3])) / 3
    assert ApproxRankMSE(discount="none").compute_loss(output, lists).item() == pytest.approx(expected)


def test_adr_mse_vanishes_when_saturated_scores_induce_the_target_ranking() -> None:
    targets = [[5.0, 1.0, 4.0, 2.0, 3.0]]
    scores = [[100.0 * t for t in targets[0]]]
    assert ApproxRankMSE().compute_loss(*batch(scores, targets)).item() < 1e-12
    reversed_scores = [[-s for s in scores[0]]]
    assert ApproxRankMSE().compute_loss(*batch(reversed_scores, targets)).item() > 1


def test_adr_mse_rejects_an_unknown_discount() -> None:
    with pytest.raises(UserError, match="loss.discount='log10' is not one of log2, reciprocal, none"):
        ApproxRankMSE(discount="log10")


def test_listwise_infonce_is_cross_entropy_over_the_own_list() -> None:
    output, lists = batch([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    first = math.log(math.e + 2)  # -log(e^0 / (e^1 + e^0 + e^0))
    second = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert ListwiseInfoNCE().compute_loss(output, lists).item() == pytest.approx((first + second) / 2)
    assert ListwiseInfoNCE(temperature=0.5).compute_loss(output, lists).item() == pytest.approx(
        F.cross_entropy(output.scores / 0.5, torch.tensor([1, 1])).item()
    )


def test_supervised_margin_mse_by_hand() -> None:
    output, lists = batch([[3.0, 1.0, 0.0]], [[2.0, 1.0, 0.0]])
    # pairs (0,1), (0,2), (1,2): student margins 2, 3, 1; teacher margins 1, 2, 1
    assert SupervisedMarginMSE().compute_loss(output, lists).item() == pytest.approx((1 + 1 + 0) / 3)


def test_weighted_sum_adds_weighted_parts_and_reports_each() -> None:
    output, lists = batch([[2.0, 1.0, 0.5]], [[3.0, 2.0, 1.0]])
    ranknet, adr = RankNet().compute_loss(output, lists), ApproxRankMSE().compute_loss(output, lists)
    total = WeightedSum({"ranknet": RankNet(), "adr_mse": ApproxRankMSE()}, {"adr_mse": 0.5})
    assert total.compute_loss(output, lists).item() == pytest.approx(ranknet.item() + 0.5 * adr.item())
    assert total.name == "ranknet+adr_mse"
    assert total.terms["ranknet"].item() == pytest.approx(ranknet.item())
    assert total.terms["adr_mse"].item() == pytest.approx(adr.item())


def test_weighted_sum_refuses_parts_that_cannot_train_together() -> None:
    with pytest.raises(UserError, match="loss.parts need different batches"):
        WeightedSum({"ranknet": RankNet(), "infonce": InfoNCE()})
    with pytest.raises(UserError, match=r"loss.weights names \['listnet'\]"):
        WeightedSum({"ranknet": RankNet()}, {"listnet": 1.0})
