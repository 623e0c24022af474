"""The gradient cache against the uncached step on the same batch: the same loss and parameter gradients for every
loss that bi-encoders train with, chunks of any size, dropout replayed; and model.dropout."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from retrieval_exp.batches import Triple
from retrieval_exp.losses.base import Loss
from retrieval_exp.losses.contrastive import InfoNCE
from retrieval_exp.losses.distillation import HybridKD, KLDistill, MarginMSE
from retrieval_exp.losses.margin import AdaptiveMargin, DistributedMargin, StaticMargin
from retrieval_exp.models.bi_encoder import BiEncoder
from retrieval_exp.training.grad_cache import cached_backward, chunks
from tests.conftest import launch
from tests.test_launch import runs

TRIPLES = [  # of several lengths, so that chunks reorder the rows
    Triple(
        f"query {i} about" + " vaccines and sleep" * (1 + i % 3),
        f"vaccines train immunity {i}" + " well" * (i % 2),
        (f"sleep improves memory {i}", f"memory of vaccines {i + 1}"),
        (0.9 - i / 20, 0.3 + i / 30, 0.1),
    )
    for i in range(7)
]
LOSSES = [
    InfoNCE(),
    InfoNCE(in_batch=False),
    HybridKD(),
    AdaptiveMargin(in_batch=True),
    StaticMargin(in_batch=True, error_fn="soft"),
    DistributedMargin(),
    MarginMSE(),
    KLDistill(),
]


def gradients(model: BiEncoder, loss: Loss, cache_chunk: int | None) -> tuple[float, dict[str, torch.Tensor]]:
    """The loss of one step on TRIPLES and every parameter's gradient, with or without the cache."""
    model.zero_grad(set_to_none=True)
    batch = model.collate(TRIPLES)
    torch.manual_seed(3)
    if cache_chunk is None:
        value = loss.compute_loss(model.training_output(batch), batch)
        value.backward()
    else:
        value = cached_backward(
            model,
            model,
            batch,
            lambda output: loss.compute_loss(output, batch),
            1.0,
            cache_chunk,
            lambda last: contextlib.nullcontext(),
            contextlib.nullcontext,
        )
    return value.item(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def same_gradients(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Equal to 1e-5 of the largest gradient (float32 sums in another order differ in the last digits; some, such
    as the attention keys' biases, are 0 up to such noise)."""
    assert found.keys() == expected.keys()
    scale = max(gradient.abs().max().item() for gradient in expected.values())
    assert scale > 1e-4  # the loss does reach the weights
    for name, gradient in expected.items():
        torch.testing.assert_close(found[name], gradient, rtol=1e-5, atol=1e-5 * scale, msg=name)


@pytest.fixture(scope="module")
def deterministic(tiny_bert: Path) -> BiEncoder:
    return BiEncoder(str(tiny_bert), projection=16, projection_dropout=0.0, dropout=0.0).train()


@pytest.mark.parametrize("loss", LOSSES, ids=lambda loss: f"{loss.name}{'-in_batch' * getattr(loss, 'in_batch', 0)}")
@pytest.mark.parametrize("chunk", [1, 3, 100])  # 7 queries and 21 documents: uneven chunks, and one chunk each
def test_cached_step_equals_the_uncached_one(deterministic: BiEncoder, loss: Loss, chunk: int) -> None:
    expected_loss, expected = gradients(deterministic, loss, None)
    value, found = gradients(deterministic, loss, chunk)
    assert value == pytest.approx(expected_loss, rel=1e-5)  # chunks cut to their texts: float32 sums in other shapes
    assert {name.split(".")[1] for name in found} >= {"embeddings", "encoder"}
    same_gradients(found, expected)


def test_dropout_masks_are_replayed_in_the_second_pass(tiny_bert: Path) -> None:
    """One chunk per group draws the uncached step's masks, in its order: equal only if the backward pass replays
    them (without the replay its gradients would come from other masks). The global RNG ends where the uncached
    step leaves it, so the next step's masks are the same too."""
    model = BiEncoder(str(tiny_bert), projection=16, projection_dropout=0.5, dropout=0.3).train()
    expected_loss, expected = gradients(model, InfoNCE(), None)
    after_uncached = torch.get_rng_state()
    value, found = gradients(model, InfoNCE(), 100)
    assert value == pytest.approx(expected_loss, rel=1e-6)
    same_gradients(found, expected)
    assert torch.equal(torch.get_rng_state(), after_uncached)
    _, other_masks = gradients(model, InfoNCE(), 3)  # other chunks, other masks: a different (valid) step
    assert any(not torch.allclose(other_masks[name], gradient) for name, gradient in expected.items())


def test_chunks_take_the_longest_texts_first_each_cut_to_its_longest() -> None:
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0]])
    tokens = {"input_ids": torch.arange(20).view(5, 4) * mask, "attention_mask": mask}
    pieces = chunks(tokens, 2)
    assert [piece.rows.tolist() for piece in pieces] == [[1, 3], [0, 4], [2]]  # lengths 4, 3 | 2, 2 | 1
    assert [piece.tokens["input_ids"].tolist() for piece in pieces] == [
        [[4, 5, 6, 7], [12, 13, 14, 0]],
        [[0, 1], [16, 17]],
        [[8]],
    ]
    assert [piece.tokens["attention_mask"].shape for piece in pieces] == [(2, 4), (2, 2), (1, 1)]
    [whole] = chunks(tokens, 5)  # one chunk: the rows keep their order (and their dropout masks)
    assert whole.rows.tolist() == [0, 1, 2, 3, 4] and torch.equal(whole.tokens["input_ids"], tokens["input_ids"])


def test_model_dropout_sets_the_encoders_and_is_not_saved(tiny_bert: Path, tmp_path: Path) -> None:
    batch = BiEncoder(str(tiny_bert)).tokenize(["vaccines train immunity"] * 2, "doc")
    silent = BiEncoder(str(tiny_bert), dropout=0.0).train()
    torch.testing.assert_close(silent(batch), silent(batch))  # no randomness left in training mode
    noisy = BiEncoder(str(tiny_bert)).train()  # the tiny BERT's own 0.1
    assert not torch.allclose(noisy(batch), noisy(batch))
    probabilities = {m.p for m in silent.encoder.modules() if isinstance(m, torch.nn.Dropout)}
    assert probabilities == {0.0}
    silent.save(tmp_path / "saved")
    assert BiEncoder(str(tmp_path / "saved")).encoder.config.hidden_dropout_prob == 0.1  # the checkpoint's


def loss_history(workdir: Path) -> list[tuple[int, float]]:
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    [run] = runs(workdir)
    assert run.info.status == "FINISHED"
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss")]


def test_a_cached_run_logs_the_loss_history_of_the_uncached_one(tmp_path: Path) -> None:
    """Four steps of 2 micro-batches of 4 triples (a query and a positive each, plus a BM25 negative), the cache
    encoding 3 texts at a time, against the same run uncached; dropout off, so both draw nothing at random."""
    common = ["model.dropout=0", "trainer.max_steps=4", "trainer.grad_accum=2", "trainer.batch_size=4", "train=true"]
    uncached = launch(tmp_path / "uncached", *common, "eval.depth=5")
    cached = launch(tmp_path / "cached", *common, "trainer.cache_chunk=3", "eval.depth=5")
    assert uncached.returncode == 0 and cached.returncode == 0, cached.stderr[-3000:]
    expected, found = loss_history(tmp_path / "uncached"), loss_history(tmp_path / "cached")
    assert [step for step, _ in found] == [1, 2, 3, 4] and len({value for _, value in expected}) == 4  # it trains
    assert [value for _, value in found] == pytest.approx([value for _, value in expected], rel=1e-5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.cache_chunk=0"], "trainer.cache_chunk=0 is out of range: it must be >= 1"),
        (["model=tiny_cross", "data=tiny_lists", "loss=listwise_infonce", "retriever=rerank", "trainer.cache_chunk=8"],
         "trainer.cache_chunk caches the embeddings of bi-encoders, but the model is a cross_encoder"),
        (["model.dropout=1.5"], "model.dropout=1.5 is not a probability in [0, 1)"),
    ],
)  # fmt: skip
def test_bad_cache_settings_are_one_line(tmp_path: Path, overrides: list[str], message: str) -> None:
    done = launch(tmp_path, *overrides)
    assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "mlflow.db").exists()  # said at start-up, before any run is recorded
