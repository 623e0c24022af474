"""Batch shapes: what a training sampler produces and what a loss consumes.

A loss names the shape it needs and a sampler the shape it makes, so an impossible pairing is caught from the
config alone, before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


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


@dataclass(frozen=True)
class RankedList:
    """One query's candidate list as text: its documents and one target per document (higher = more relevant:
    a relevance label, depth - rank + 1, or a teacher's score)."""

    query: str
    documents: tuple[str, ...]
    targets: tuple[float, ...]
