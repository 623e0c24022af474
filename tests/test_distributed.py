"""Data-parallel training: two gloo processes on CPU against one process on the same global batch."""

from __future__ import annotations

import functools
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
    model_folder: Path, checkpoints: Path, gather: bool, ranks: Ranks, cache_chunk: int | None = None
) -> tuple[float, dict[str, torch.Tensor]]:
    """The logged loss of one SGD step (lr 1) on a batch of 8, and each parameter's change (minus the gradient).
    Without dropout, so that one process and two draw no different masks."""
    torch.manual_seed(0)
    model = BiEncoder(str(model_folder), dropout=0.0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    logged: dict[str, float] = {}
    train(
        model,
        InfoNCE(),
        Samples(),
        functools.partial(torch.optim.SGD, lr=1.0),
        functools.partial(warmup_decay, warmup=0, decay="constant"),
        TrainerSettings(
            max_steps=1,
            batch_size=8,
            max_grad_norm=None,
            log_every=1,
            gather_across_ranks=gather,
            cache_chunk=cache_chunk,
        ),
        Hardware(),
        checkpoints,
        lambda metrics, step: logged.update(metrics),
        ranks=ranks,
    )
    return logged["train/loss"], {name: p.detach() - before[name] for name, p in model.named_parameters()}


def worker(rank: int, port: int, model_folder: Path, out: Path, gather: bool, cache_chunk: int | None) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        loss, change = one_step(model_folder, out / "checkpoints", gather, Ranks(rank, 2), cache_chunk)
        torch.save({"loss": loss, "change": change}, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def two_processes(tmp_path: Path, model_folder: Path, gather: bool, cache_chunk: int | None = None) -> list[dict]:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    mp.spawn(worker, args=(port, model_folder, tmp_path, gather, cache_chunk), nprocs=2)
    return [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]


@pytest.mark.slow
@pytest.mark.parametrize("cache_chunk", [None, 3])  # 3: each rank's 4 queries and 8 documents in uneven chunks
def test_two_processes_gathering_in_batch_negatives_compute_the_loss_and_gradients_of_one(
    tmp_path: Path, tiny_bert: Path, cache_chunk: int | None
) -> None:
    loss, change = one_step(tiny_bert, tmp_path / "single", False, Ranks())
    ranks = two_processes(tmp_path, tiny_bert, gather=True, cache_chunk=cache_chunk)
    for result in ranks:
        assert result["loss"] == pytest.approx(loss, rel=1e-5)
        for name, expected in change.items():
            torch.testing.assert_close(result["change"][name], expected, rtol=1e-4, atol=1e-6)
    assert any(expected.abs().max() > 1e-4 for expected in change.values())  # the step did move the weights


@pytest.mark.slow
def test_without_gathering_each_process_sees_only_its_half_of_the_negatives(tmp_path: Path, tiny_bert: Path) -> None:
    loss, _ = one_step(tiny_bert, tmp_path / "single", False, Ranks())
    ranks = two_processes(tmp_path, tiny_bert, gather=False)
    assert ranks[0]["loss"] == pytest.approx(ranks[1]["loss"])  # the mean over the two halves, logged by both
    assert ranks[0]["loss"] < loss  # 7 negatives per query instead of 15: an easier softmax


def test_shards_are_contiguous_slices_of_each_global_batch() -> None:
    assert Ranks(1, 2).shard(10, 4) == [[2, 3], [6, 7]]
    assert Ranks().shard(10, 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(UserError, match="trainer.batch_size=5 does not split over 2 processes"):
        Ranks(0, 2).shard(10, 5)
