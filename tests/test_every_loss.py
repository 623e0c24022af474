"""Every conf/loss option, built from its config and run on a batch of the shape it declares: a finite scalar whose
gradient reaches the model's output. A new loss config is exercised here without a line of test code. Losses read
their batches through batches.py alone, so none imports a model module or transformers."""

import subprocess
import sys
from typing import Any

import pytest
import torch
from hydra.utils import instantiate

from retrieval_exp.batches import (
    BatchShape,
    ChunkGroupBatch,
    ChunkGroupOutput,
    ListBatch,
    ListScores,
    Tokens,
    TripleBatch,
    TripleEmbeddings,
)
from retrieval_exp.losses.base import Loss
from tests.conftest import REPO, TINY, compose_config

LOSSES = sorted(path.stem for path in (REPO / "conf" / "loss").glob("*.yaml"))
NO_TOKENS: Any = None  # the losses read outputs and targets, never tokens


class FixedLM:
    """A stand-in for Revela's LM: an LM loss that falls as the attention weights favour chunk pairs with a low
    fixed cost, and fixed continuation log-likelihoods, so gradients reach the retriever's similarities only."""

    def __init__(self, chunks: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.costs = torch.rand(chunks, chunks, generator=generator)
        self.likelihoods = -torch.rand(chunks, chunks, generator=generator) * 10

    def lm_losses(
        self, tokens: Tokens, weights: torch.Tensor, v_norm: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return (weights * self.costs).sum(-1).mean(), self.costs.mean()

    def continuation_log_likelihoods(self, chunks: list[list[int]], candidates: torch.Tensor) -> torch.Tensor:
        return self.likelihoods.gather(1, candidates)


def triples() -> tuple[TripleEmbeddings, TripleBatch, list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    queries, positives = (torch.randn(3, 8, generator=generator, requires_grad=True) for _ in range(2))
    negatives = torch.randn(3, 2, 8, generator=generator, requires_grad=True)
    teacher = torch.randn(3, 3, generator=generator)
    mask = torch.zeros(3, 9, dtype=torch.bool)
    batch = TripleBatch(NO_TOKENS, NO_TOKENS, 2, teacher_scores=teacher, false_negatives=mask)
    return TripleEmbeddings(queries, positives, negatives), batch, [queries, positives, negatives]


def ranked_lists() -> tuple[ListScores, ListBatch, list[torch.Tensor]]:
    scores = torch.randn(3, 4, generator=torch.Generator().manual_seed(2), requires_grad=True)
    targets = torch.tensor([[3.0, 2.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 1.0, 0.0]])
    return ListScores(scores), ListBatch(NO_TOKENS, targets), [scores]


def chunk_groups() -> tuple[ChunkGroupOutput, ChunkGroupBatch, list[torch.Tensor]]:
    group_of = torch.tensor([0] * 5 + [1] * 5)
    raw = torch.randn(10, 10, generator=torch.Generator().manual_seed(3), requires_grad=True)
    allowed = (group_of[:, None] == group_of[None, :]) & ~torch.eye(10, dtype=torch.bool)
    batch = ChunkGroupBatch(NO_TOKENS, NO_TOKENS, NO_TOKENS, [[1, 2, 3]] * 10, group_of)
    similarities = (raw * 1e-4).masked_fill(~allowed, float("-inf"))  # close: Revela's temperature is 1e-4
    return ChunkGroupOutput(similarities, FixedLM(10), batch), batch, [raw]


BATCHES = {
    BatchShape.TRIPLES: triples,
    BatchShape.SCORED_PAIRS: triples,
    BatchShape.RANKED_LISTS: ranked_lists,
    BatchShape.CHUNK_GROUPS: chunk_groups,
}


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_config_gives_a_finite_loss_with_a_gradient(name: str) -> None:
    loss = instantiate(compose_config(*TINY, f"loss={name}").loss)
    assert isinstance(loss, Loss) and loss.batch_shape in BATCHES, f"loss={name}: no test batch for its shape"
    output, batch, leaves = BATCHES[loss.batch_shape]()
    value = loss.compute_loss(output, batch)
    assert value.dim() == 0 and torch.isfinite(value), f"loss={name} gave {value}"
    value.backward()
    assert any(leaf.grad is not None and leaf.grad.abs().sum() > 0 for leaf in leaves), f"loss={name}: no gradient"
    assert all(torch.isfinite(term) for term in loss.terms.values())


def test_losses_import_no_model_module_and_no_transformers() -> None:
    modules = [f"retrieval_exp.losses.{path.stem}" for path in (REPO / "retrieval_exp" / "losses").glob("*.py")]
    probe = f"import sys; import {', '.join(modules)}; print(sorted(m for m in sys.modules if m.startswith("
    probe += "('transformers', 'retrieval_exp.models'))))"
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    assert imported.stdout.strip() == "[]"
