"""Data-parallel training over the processes of one job: a SLURM job's tasks (one per GPU, through submitit) or
torchrun's processes.

`trainer.batch_size` stays the global batch: each rank trains on its contiguous slice of every batch, so N GPUs
take the same steps as one. With `trainer.gather_across_ranks`, every rank's loss sees the whole batch (in-batch
negatives from all ranks), which makes N processes compute the loss and gradients of one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist

from retrieval_exp.errors import UserError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Item = TypeVar("Item", bound="DataclassInstance")


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job; a single process is rank 0 of 1."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, examples: int, batch_size: int) -> list[list[int]]:
        """This rank's indices of each full batch of `examples` (the last partial batch is dropped)."""
        if batch_size % self.world:
            raise UserError(
                f"trainer.batch_size={batch_size} does not split over {self.world} processes: make it a multiple"
            )
        local = batch_size // self.world
        starts = range(0, examples - batch_size + 1, batch_size)
        return [list(range(start + self.rank * local, start + (self.rank + 1) * local)) for start in starts]

    def gather(self, item: Item) -> Item:
        """`item` (a dataclass) with each tensor field replaced by every rank's, concatenated in rank order (or
        combined by the field's `metadata["gather"]`). Only this rank's part keeps its graph, so the loss must be
        scaled by `world` (DDP averages the gradients)."""
        changes = {}
        for field in dataclasses.fields(item):
            value = getattr(item, field.name)
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                parts = [torch.empty_like(value) for _ in range(self.world)]
                dist.all_gather(parts, value.detach().contiguous())
                parts[self.rank] = value
                changes[field.name] = field.metadata.get("gather", torch.cat)(parts)
        return dataclasses.replace(item, **changes)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of `value` over the ranks."""
        if self.world > 1:
            value = value.clone()
            dist.all_reduce(value)
            value /= self.world
        return value

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when `flag` is true on one."""
        if self.world == 1:
            return flag
        value = torch.tensor(float(flag), device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (filling caches), the other ranks after it."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()


SINGLE_PROCESS = Ranks()


def start(device: str) -> Ranks:
    """Join the job's process group. A SLURM job with several tasks gets torch.distributed's variables from
    submitit (master address and port, rank, world size; each task sees its own GPU); torchrun sets them itself."""
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=device.startswith("cuda"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks()
    if device.startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size())


class TrainingForward(torch.nn.Module):
    """`model.training_output` as forward(), the call DistributedDataParallel watches to synchronise gradients;
    with `encode`, the embeddings of one chunk of tokenised texts (the gradient cache's passes)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model: Any = model  # a suite model: training_output, and forward() for the gradient cache

    def forward(self, batch: Any, encode: bool = False) -> Any:
        return self.model(batch) if encode else self.model.training_output(batch)


def data_parallel(model: torch.nn.Module, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    """What computes a batch's training output: the model itself, or wrapped in DDP over the ranks."""
    forward = TrainingForward(model)
    if ranks.world == 1:
        return forward
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(forward, device_ids=ids, find_unused_parameters=True)
