"""The suite's extension points, written down: what a model, a training sampler and a retriever provide.

A config names an implementation by its dotted path (`_target_`); start-up checks read the class attributes declared
here (a loss's `model_kinds` against a model's `kind`, a loss's `batch_shape` against a sampler's) before anything
is built, so a wrong pairing is one line. docs/ARCHITECTURE.md shows where each one plugs in; CONTRIBUTING.md has
the checklist for adding one.
"""

from __future__ import annotations

import contextlib
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import torch

from retrieval_exp.batches import BatchShape
from retrieval_exp.ir_types import Corpus, Run

Autocast = Callable[[], contextlib.AbstractContextManager[None]]
Side = Literal["query", "doc"]


class ModelKind(StrEnum):
    """What a model is, for the checks that pair it with losses and retrievers (and in a saved folder's settings)."""

    BI_ENCODER = "bi_encoder"  # one vector per text (models.bi_encoder.BiEncoder)
    CROSS_ENCODER = "cross_encoder"  # one score per (query, document) pair (models.cross_encoder.CrossEncoder)
    REVELA = "revela"  # a bi-encoder trained through a language model (models.revela.Revela)


class Model(Protocol):
    """A trainable model: turns a sampler's examples into a batch, a batch into what its losses score, and saves
    itself as a folder that its config's `name_or_path` loads again."""

    kind: ClassVar[ModelKind]

    def collate(self, examples: Sequence[Any]) -> Any:
        """The tokenised batch (batches.TripleBatch, ListBatch, ChunkGroupBatch) of a sampler's examples."""
        ...

    def training_output(self, batch: Any) -> Any:
        """What the loss consumes (batches.TripleEmbeddings, ListScores, ChunkGroupOutput)."""
        ...

    def save(self, path: Path) -> None: ...


@runtime_checkable
class Embedder(Protocol):
    """A model that turns texts into vectors (dense retrieval, re-ranking by vectors), and names what decides them."""

    def embed(self, texts: Sequence[str], side: Side, batch_size: int, autocast: Autocast = ...) -> torch.Tensor: ...

    def fingerprint(self) -> str:
        """A digest of everything that decides a text's vector (weights, tokenizer, pooling, lengths, prefixes)."""
        ...


class PairScorer(Protocol):
    """A model that scores (query, document) pairs (re-ranking; a teacher; the agreement of a student)."""

    def score_pairs(
        self,
        queries: Mapping[str, str],
        documents: Mapping[str, str],
        pairs: Sequence[tuple[str, str]],
        batch_size: int,
        autocast: Autocast = ...,
    ) -> list[float]: ...


class Retriever(ABC):
    """Ranks a corpus for each query. `needs_encoder`: built with the run's model (`encoder=`), and `model_kinds` says
    which kinds it ranks with; `needs_corpus`: False for stored runs, which never read the documents."""

    name: ClassVar[str]
    needs_encoder: ClassVar[bool] = False
    needs_corpus: ClassVar[bool] = True
    model_kinds: ClassVar[tuple[ModelKind, ...]] = ()

    @abstractmethod
    def search(self, corpus: Corpus, queries: dict[str, str], depth: int) -> Run:
        """The top `depth` documents of `corpus` for each query (query id -> doc id -> score)."""

    def figures(self) -> dict[str, float]:
        """Figures about the last search, logged with the collection's results (an approximate index's recall
        against exact search)."""
        return {}


class TwoStageRetriever(Retriever):
    """Re-ranks the candidates of its `first_stage`, which it keeps in `candidates` after each search, so that
    evaluation reports the first stage beside it (first_stage/* measures, first_stage.trec)."""

    first_stage: Retriever
    candidates: Run


class Sampler(ABC):
    """A training data source: `epoch(e)` is the examples of epoch e in order, the same for the same (seed, e), of the
    shape `batch_shape`; `requires` are the parts its dataset must provide (checked at start-up); `report` holds
    figures about the data (kept examples, dropped queries, negatives' provenance), which the recipe logs as metrics
    after training. An epoch may be a lazy sequence whose items (and slices) are built when read (EpochTriples,
    GroupLines), so that an MS MARCO-sized epoch holds ids and offsets, not texts."""

    batch_shape: ClassVar[BatchShape]
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.report: dict[str, float] = {}

    def epoch_rng(self, epoch: int) -> random.Random:
        """The random source of `epoch`: independent across epochs, the same for the same (seed, epoch)."""
        return random.Random(self.seed * 1_000_003 + epoch)

    @abstractmethod
    def __len__(self) -> int:
        """Examples per epoch."""

    @abstractmethod
    def epoch(self, epoch: int) -> Sequence[Any]:
        """The examples of `epoch`, in training order."""
