"""Data-parallel training: two gloo processes on CPU against one process on the same global batch."""

from __future__ import annotations

import functools
import json
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from retrieval_exp.batches import Triple
from retrieval_exp.errors import UserError
from retrieval_exp.hardware import Hardware
from retrieval_exp.losses.contrastive import InfoNCE
from retrieval_exp.models.bi_encoder import BiEncoder
from retrieval_exp.training.distributed import Ranks
from retrieval_exp.training.loop import TrainerSettings, train
from retrieval_exp.training.schedule import warmup_decay

TRIPLES = [
    Triple(f"query {i} about vaccines", f"vaccines train immunity {i}", (f"sleep improves memory {i}",))
    for i in range(8)
]


class Samples:
    """The same triples every epoch."""

    def __len__(self) -> int:
        return len(TRIPLES)

    def epoch(self, epoch: int) -> list[Triple]:
        return TRIPLES


def one_step(
    model_folder: Path, checkpoints: Path, gather: bool, ranks: Ranks
) -> tuple[float, dict[str, torch.Tensor]]:
    """The logged loss of one SGD step (lr 1) on a batch of 8, and each parameter's change (minus the gradient)."""
    torch.manual_seed(0)
    model = BiEncoder(str(model_folder))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    logged: dict[str, float] = {}
    train(
        model,
        InfoNCE(),
        Samples(),
        functools.partial(torch.optim.SGD, lr=1.0),
        functools.partial(warmup_decay, warmup=0, decay="constant"),
        TrainerSettings(max_steps=1, batch_size=8, max_grad_norm=None, log_every=1, gather_across_ranks=gather),
        Hardware(),
        checkpoints,
        lambda metrics, step: logged.update(metrics),
        ranks=ranks,
    )
    return logged["train/loss"], {name: p.detach() - before[name] for name, p in model.named_parameters()}


def worker(rank: int, port: int, model_folder: Path, out: Path, gather: bool) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        loss, change = one_step(model_folder, out / "checkpoints", gather, Ranks(rank, 2))
        torch.save({"loss": loss, "change": change}, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def two_processes(tmp_path: Path, model_folder: Path, gather: bool) -> list[dict]:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    mp.spawn(worker, args=(port, model_folder, tmp_path, gather), nprocs=2)
    return [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]


@pytest.fixture(scope="module")
def no_dropout_model(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT without dropout, so that one process and two draw no different masks."""
    folder = tmp_path_factory.mktemp("no_dropout")
    for path in tiny_bert.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config |= {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_two_processes_gathering_in_batch_negatives_compute_the_loss_and_gradients_of_one(
    tmp_path: Path, no_dropout_model: Path
) -> None:
    loss, change = one_step(no_dropout_model, tmp_path / "single", False, Ranks())
    ranks = two_processes(tmp_path, no_dropout_model, gather=True)
    for result in ranks:
        assert result["loss"] == pytest.approx(loss, rel=1e-5)
        for name, expected in change.items():
            torch.testing.assert_close(result["change"][name], expected, rtol=1e-4, atol=1e-6)
    assert any(expected.abs().max() > 1e-4 for expected in change.values())  # the step did move the weights


def test_without_gathering_each_process_sees_only_its_half_of_the_negatives(
    tmp_path: Path, no_dropout_model: Path
) -> None:
    loss, _ = one_step(no_dropout_model, tmp_path / "single", False, Ranks())
    ranks = two_processes(tmp_path, no_dropout_model, gather=False)
    assert ranks[0]["loss"] == pytest.approx(ranks[1]["loss"])  # the mean over the two halves, logged by both
    assert ranks[0]["loss"] < loss  # 7 negatives per query instead of 15: an easier softmax


def test_shards_are_contiguous_slices_of_each_global_batch() -> None:
    assert Ranks(1, 2).shard(10, 4) == [[2, 3], [6, 7]]
    assert Ranks().shard(10, 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(UserError, match="trainer.batch_size=5 does not split over 2 processes"):
        Ranks(0, 2).shard(10, 5)
