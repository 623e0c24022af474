"""The batch contract: what a training sampler produces, what a model makes of it, and what a loss consumes.

Three layers, one per stage of a training step, named by shape:

- examples, as text, from a sampler (`Triple`, `RankedList`, a chunk group);
- tokenised batches, from a model's `collate` (`TripleBatch`, `ListBatch`, `ChunkGroupBatch`);
- training outputs, from a model's `training_output`, which losses score (`TripleEmbeddings`, `ListScores`,
  `ChunkGroupOutput`).

A loss names the `BatchShape` it needs and a sampler the one it makes, so an impossible pairing is caught from the
config alone, before any model is loaded. Losses import this module and no model module: a new loss needs only the
shapes written here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import torch


class Tokens(Protocol):
    """Tokenised texts (transformers' BatchEncoding): tensors by name, movable to a device."""

    def __getitem__(self, key: str) -> torch.Tensor: ...

    def keys(self) -> Iterable[str]: ...

    def to(self, device: torch.device) -> Tokens: ...


ChunkGroup = Sequence[str]  # Revela's example: chunks of one document neighbourhood, in-batch context for each other


class BatchShape(StrEnum):
    TRIPLES = "triples (q, d+, [d-]*k)"
    SCORED_PAIRS = "pairs with teacher score (q, d, t)"
    RANKED_LISTS = "ranked lists (q, [d]*n, targets)"
    CHUNK_GROUPS = "chunk groups ([c]*16)"


@dataclass(frozen=True)
class Triple:
    """One training example as text: a query, a relevant document and k non-relevant ones; with a teacher, its
    scores for the positive then each negative. Ids where the data has them: the query's, the documents' (positive,
    then negatives) and those of every document judged relevant to the query, so that a batch can tell another
    row's document that is relevant to this query (or is this row's positive) from a true negative."""

    query: str
    positive: str
    negatives: tuple[str, ...]
    teacher_scores: tuple[float, ...] | None = None
    query_id: str | None = None
    doc_ids: tuple[str, ...] | None = None
    relevant: frozenset[str] = frozenset()

    def document_keys(self) -> tuple[str, ...]:
        """What identifies each document (positive, then negatives): its id, or its text where there is none."""
        return self.doc_ids or (self.positive, *self.negatives)


def false_negatives(triples: Sequence[Triple]) -> torch.Tensor:
    """The in-batch losses' mask for `triples` as one batch: rows are the queries, columns the documents (every
    positive, then every negative); True where another row's document is judged relevant to the row's query, is its
    positive again (same id), or has its positive's text. Looked up by id and text, so the cost grows with the batch,
    not with its square."""
    documents = [t.positive for t in triples] + [n for t in triples for n in t.negatives]
    keys = [t.document_keys()[0] for t in triples] + [key for t in triples for key in t.document_keys()[1:]]
    columns: dict[str, list[int]] = {}
    for column, (key, text) in enumerate(zip(keys, documents)):
        columns.setdefault(f"id:{key}", []).append(column)
        columns.setdefault(f"text:{text}", []).append(column)
    mask = torch.zeros(len(triples), len(keys), dtype=torch.bool)
    for row, triple in enumerate(triples):
        wanted = [f"id:{key}" for key in triple.relevant | {triple.document_keys()[0]}] + [f"text:{triple.positive}"]
        mask[row, [column for name in wanted for column in columns.get(name, [])]] = True
    mask[torch.arange(len(triples)), torch.arange(len(triples))] = False  # the row's own positive is its target
    return mask


@dataclass(frozen=True)
class RankedList:
    """One query's candidate list as text: its documents and one target per document (higher = more relevant:
    a relevance label, depth - rank + 1, or a teacher's score)."""

    query: str
    documents: tuple[str, ...]
    targets: tuple[float, ...]


def block_diagonal(masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """The false-negative mask of the ranks' gathered batch from each rank's own (b, b + b*k): gathered outputs hold
    every rank's positives, then every rank's negatives; what one rank's row is to another rank's documents is not
    known, and is left False (a negative)."""
    b, world = masks[0].shape[0], len(masks)
    negatives = masks[0].shape[1] - b
    combined = torch.zeros(world * b, world * (b + negatives), dtype=torch.bool, device=masks[0].device)
    for rank, mask in enumerate(masks):
        rows = slice(rank * b, (rank + 1) * b)
        combined[rows, rank * b : (rank + 1) * b] = mask[:, :b]
        start = world * b + rank * negatives
        combined[rows, start : start + negatives] = mask[:, b:]
    return combined


@dataclass
class TripleBatch:
    """Tokenised triples: B queries, then B positives followed by B*k negatives (k per query, in query order).
    `false_negatives` (B, B + B*k): document j is judged relevant to query i, or is i's positive, while not being
    i's own positive column (j != i); in-batch losses do not count such a document as a negative of row i.
    Gathered across ranks it is known within each rank's part only (block_diagonal)."""

    queries: Tokens
    documents: Tokens
    num_negatives: int
    teacher_scores: torch.Tensor | None = None  # (B, 1 + k): positive, then negatives
    false_negatives: torch.Tensor | None = field(default=None, metadata={"gather": block_diagonal})

    def not_negatives(self, in_batch: bool) -> torch.Tensor | None:
        """The false negatives among each row's candidates: every document of the batch (B, B + B*k), or the row's
        own positive and negatives (B, 1 + k); None when the batch has no mask."""
        mask = self.false_negatives
        if mask is None or in_batch:
            return mask
        size = mask.shape[0]
        rows = torch.arange(size, device=mask.device)
        own = mask[:, size:].view(size, size, self.num_negatives)[rows, rows]
        return torch.cat([mask[rows, rows].unsqueeze(1), own], dim=1)

    def teacher(self) -> torch.Tensor:
        """The teacher's scores (B, 1 + k), which distillation losses need (their samplers attach a teacher)."""
        if self.teacher_scores is None:
            raise ValueError("the batch carries no teacher scores: the sampler has no teacher attached")
        return self.teacher_scores

    def to(self, device: torch.device) -> TripleBatch:
        moved = [None if t is None else t.to(device) for t in (self.teacher_scores, self.false_negatives)]
        return TripleBatch(self.queries.to(device), self.documents.to(device), self.num_negatives, *moved)


@dataclass
class TripleEmbeddings:
    """What bi-encoder losses score: queries (B, H), positives (B, H), negatives (B, k, H)."""

    queries: torch.Tensor
    positives: torch.Tensor
    negatives: torch.Tensor


@dataclass
class ListBatch:
    """Tokenised ranked lists: Q queries x N documents as Q*N (query, doc) pairs, query-major; targets (Q, N)."""

    pairs: Tokens
    targets: torch.Tensor

    def to(self, device: torch.device) -> ListBatch:
        return ListBatch(self.pairs.to(device), self.targets.to(device))


@dataclass
class ListScores:
    """What ranked-list losses score: one relevance score per (query, document), (Q, N)."""

    scores: torch.Tensor


class ChunkGroupLM(Protocol):
    """The language model side of a chunk-group output (models.revela.Revela), which LM-supervised losses call."""

    def lm_losses(
        self, tokens: Tokens, weights: torch.Tensor, v_norm: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token loss with in-batch attention weighted by `weights`, and without it."""
        ...

    def continuation_log_likelihoods(self, chunks: list[list[int]], candidates: torch.Tensor) -> torch.Tensor:
        """log P(second half of chunk i | chunk j, first half of chunk i) for each j in candidates[i], (N, k)."""
        ...


@dataclass
class ChunkGroupBatch:
    """N chunks from G groups: the retriever's queries (each chunk's first half) and passages (whole chunks), the
    LM's token ids per chunk (no special tokens) and, padded, with the tokenizer's usual prefix (BOS if any)."""

    queries: Tokens
    passages: Tokens
    lm_tokens: Tokens
    lm_chunks: list[list[int]]
    group_of: torch.Tensor  # (N,): each chunk's group

    def to(self, device: torch.device) -> ChunkGroupBatch:
        return ChunkGroupBatch(
            self.queries.to(device),
            self.passages.to(device),
            self.lm_tokens.to(device),
            self.lm_chunks,
            self.group_of.to(device),
        )


@dataclass
class ChunkGroupOutput:
    """What Revela's and REPLUG's losses consume: the retriever's similarities (N, N), cos(query_i, passage_j), with
    -inf on the diagonal and between groups; and the LM, to run on the batch with weights the loss derives."""

    similarities: torch.Tensor
    model: ChunkGroupLM
    batch: ChunkGroupBatch

    def lm_losses(self, weights: torch.Tensor, v_norm: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token loss with in-batch attention weighted by `weights` (pass 2), and without it (pass 1)."""
        return self.model.lm_losses(self.batch.lm_tokens, weights, v_norm)

    def continuation_log_likelihoods(self, candidates: torch.Tensor) -> torch.Tensor:
        """log P_LM(second half of chunk i | chunk j, first half of chunk i) for each j in candidates[i], (N, k)."""
        return self.model.continuation_log_likelihoods(self.batch.lm_chunks, candidates)
