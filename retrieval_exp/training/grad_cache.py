"""Gradient caching (GradCache: Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup"): the loss and gradients of a whole batch with the activation memory of `trainer.cache_chunk` texts.

1. Every text's embedding is computed in chunks, without graphs; the RNG state before each chunk is kept.
2. The loss is computed on all the embeddings at once (in-batch negatives see the whole batch), and its gradient
   with respect to each embedding is taken.
3. Each chunk is encoded again, with its RNG state replayed (the same dropout masks as in 1), and back-propagates its
   slice of those gradients into the parameters.

The parameter gradients equal those of the uncached step, at the cost of a second forward pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

Tokens = Mapping[str, torch.Tensor]


@runtime_checkable
class ChunkableModel(Protocol):
    """A model whose training output is assembled from embeddings of independently encoded texts."""

    def embedding_inputs(self, batch: Any) -> Sequence[Tokens]:
        """The batch's tokenised texts, one tensor mapping per group (e.g. queries, documents)."""

    def assemble(self, batch: Any, embeddings: Sequence[torch.Tensor]) -> Any:
        """The training output from one embedding matrix per group of `embedding_inputs`."""


class RngState:
    """The RNG state (CPU, and the device's when it is a GPU) at construction, replayable any number of times."""

    def __init__(self, device: torch.device) -> None:
        self.devices = [device] if device.type == "cuda" else []
        self.cpu = torch.get_rng_state()
        self.cuda = [torch.cuda.get_rng_state(d) for d in self.devices]

    @contextlib.contextmanager
    def replayed(self) -> Iterator[None]:
        """Run the block from this state, leaving the global RNG as it was before the block."""
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.cpu)
            for device, state in zip(self.devices, self.cuda):
                torch.cuda.set_rng_state(state, device)
            yield


def first_tensor(tokens: Tokens) -> torch.Tensor:
    return next(iter(tokens.values()))


def chunks(tokens: Tokens, size: int) -> list[dict[str, torch.Tensor]]:
    """Consecutive row slices of at most `size` rows of every tensor in `tokens`."""
    rows = first_tensor(tokens).shape[0]
    return [{key: value[start : start + size] for key, value in tokens.items()} for start in range(0, rows, size)]


def cached_backward(
    model: ChunkableModel,
    encode: Callable[[Tokens], torch.Tensor],
    batch: Any,
    loss_of: Callable[[Any], torch.Tensor],
    scale: float,
    chunk: int,
    synchronised: Callable[[bool], contextlib.AbstractContextManager[Any]],
    autocast: Callable[[], contextlib.AbstractContextManager[Any]],
) -> torch.Tensor:
    """Accumulate the gradients of `scale * loss_of(output)` for `batch` into the parameters, chunk by chunk; returns
    `loss_of(output)` (detached). `encode` embeds one chunk (the call DDP watches); `synchronised(last)` wraps each
    backward pass, `last` true for the final one (DDP reduces the gradients there only)."""
    groups = [chunks(tokens, chunk) for tokens in model.embedding_inputs(batch)]
    device = first_tensor(groups[0][0]).device
    states: list[list[RngState]] = []
    embeddings = []
    with torch.no_grad():
        for pieces in groups:
            states.append([])
            parts = []
            for piece in pieces:
                states[-1].append(RngState(device))
                with autocast():
                    parts.append(encode(piece))
            embeddings.append(torch.cat(parts).requires_grad_())
    value = loss_of(model.assemble(batch, embeddings))
    (value * scale).backward()
    final = (len(groups) - 1, len(groups[-1]) - 1)
    for number, (pieces, replays, embedded) in enumerate(zip(groups, states, embeddings)):
        gradients = embedded.grad.split([first_tensor(piece).shape[0] for piece in pieces])
        for index, (piece, state, gradient) in enumerate(zip(pieces, replays, gradients)):
            with state.replayed(), synchronised((number, index) == final):
                with autocast():
                    again = encode(piece)
                again.backward(gradient)
    return value.detach()
