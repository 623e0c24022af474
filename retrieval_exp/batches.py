"""Batch shapes: what a training sampler produces and what a loss consumes.

A loss names the shape it needs and a sampler the shape it makes, so an impossible pairing is caught from the
config alone, before any model is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import torch


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
