"""Gradient caching (GradCache: Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup"): the loss and gradients of a whole batch with the activation memory of `trainer.cache_chunk` texts.

1. Every text's embedding is computed in chunks, without graphs; the RNG state before each chunk is kept. Chunks
   take the texts longest first and are cut to their longest text, so that they pad little.
2. The loss is computed on all the embeddings at once (in-batch negatives see the whole batch), and its gradient
   with respect to each embedding is taken.
3. Each chunk is encoded again, with its RNG state replayed (the same dropout masks as in 1), and back-propagates its
   slice of those gradients into the parameters.

The parameter gradients equal those of the uncached step, at the cost of a second forward pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

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


def gradient_of(embeddings: torch.Tensor) -> torch.Tensor:
    """The loss's gradient with respect to `embeddings`, which the first pass computed."""
    if embeddings.grad is None:
        raise RuntimeError("the loss does not depend on these embeddings: nothing to cache")
    return embeddings.grad


class Chunk(NamedTuple):
    """Some rows of a group of tokenised texts: which (indices into the group) and their tokens."""

    rows: torch.Tensor
    tokens: dict[str, torch.Tensor]


def chunks(tokens: Tokens, size: int) -> list[Chunk]:
    """The rows of `tokens` in chunks of at most `size`, each cut to its own longest text (trailing columns that are
    padding in every row dropped). With more than one chunk, the longest texts come first, so that a chunk pads
    little; one chunk keeps the rows' order (and so the uncached step's dropout masks)."""
    first = first_tensor(tokens)
    rows, width = first.shape[0], first.shape[1] if first.dim() > 1 else 0
    mask = tokens.get("attention_mask")
    lengths = mask.sum(1) if mask is not None else torch.full((rows,), width, device=first.device)
    order = torch.arange(rows, device=first.device)
    if rows > size:
        order = torch.argsort(lengths, descending=True, stable=True)
    pieces = []
    for start in range(0, rows, size):
        index = order[start : start + size]
        used = width if mask is None else int(mask[index].any(0).nonzero().max()) + 1
        cut = {
            key: value[index][:, :used] if value.dim() > 1 and value.shape[1] == width else value[index]
            for key, value in tokens.items()
        }
        pieces.append(Chunk(index, cut))
    return pieces


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
    device = first_tensor(groups[0][0].tokens).device
    states: list[list[RngState]] = []
    embeddings = []
    with torch.no_grad():
        for pieces in groups:
            states.append([])
            parts = []
            for piece in pieces:
                states[-1].append(RngState(device))
                with autocast():
                    parts.append(encode(piece.tokens))
            in_order = torch.argsort(torch.cat([piece.rows for piece in pieces]))  # back to the group's order
            embeddings.append(torch.cat(parts)[in_order].requires_grad_())
    value = loss_of(model.assemble(batch, embeddings))
    (value * scale).backward()
    final = (len(groups) - 1, len(groups[-1]) - 1)
    for number, (pieces, replays, embedded) in enumerate(zip(groups, states, embeddings)):
        for index, (piece, state) in enumerate(zip(pieces, replays)):
            with state.replayed(), synchronised((number, index) == final):
                with autocast():
                    again = encode(piece.tokens)
                again.backward(gradient_of(embedded)[piece.rows])
    return value.detach()
