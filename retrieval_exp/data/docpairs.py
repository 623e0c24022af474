"""The self-distillation paper's "grouped" docpairs in one pass over the file, holding the groups it keeps.

MS MARCO's qidpidtriples hold ~400M (query, positive, negative) lines. The grouping keeps the first `group_size`
pairs of each query that has at least that many, in the order the groups complete. In a file grouped by query (each
query's lines together, as the official triples are) a query's incomplete group is dropped when its lines end, so at
most one incomplete group is held; a file that interleaves queries is read again keeping every incomplete group.
The complete groups are kept as examples (query, positive, [negative]) in integer codes (CompactExamples).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from retrieval_exp.data.examples import CompactExamples

log = logging.getLogger(__name__)
Pair = tuple[str, str]  # positive doc id, negative doc id


@dataclass(frozen=True)
class Groups:
    """The complete groups' pairs as examples and their queries, in the order the groups completed, and the most
    pairs of incomplete groups held at once."""

    examples: CompactExamples
    queries: list[str]
    held_at_most: int


def first_pairs(read: Callable[[], Iterable[Any]], group_size: int, max_queries: int | None = None) -> Groups:
    """The first `group_size` pairs of each query with at least that many, read from `read()` (rows with query_id,
    doc_id_a, doc_id_b: ir_datasets' docpairs); `max_queries` stops after that many complete groups."""
    grouped = _first_pairs(read(), group_size, max_queries, grouped_by_query=True)
    if grouped is not None:
        return grouped
    log.warning("the docpairs interleave queries: read again, holding every query's first pairs until the end")
    ungrouped = _first_pairs(read(), group_size, max_queries, grouped_by_query=False)
    assert ungrouped is not None
    return ungrouped


def _first_pairs(
    rows: Iterable[Any], group_size: int, max_queries: int | None, grouped_by_query: bool
) -> Groups | None:
    """One pass; with `grouped_by_query`, None when a query whose incomplete group was dropped comes back."""
    incomplete: dict[str, list[Pair]] = {}
    dropped: set[str] = set()
    complete, queries = CompactExamples(), []
    done: set[str] = set()
    held = held_at_most = 0
    previous: str | None = None
    for row in rows:
        query_id = sys.intern(row.query_id)
        if grouped_by_query and query_id != previous:
            if previous is not None and previous in incomplete:
                held -= len(incomplete.pop(previous))
                dropped.add(previous)
            if query_id in dropped:
                return None
            previous = query_id
        if query_id in done:
            continue
        group = incomplete.setdefault(query_id, [])
        group.append((sys.intern(row.doc_id_a), sys.intern(row.doc_id_b)))
        held += 1
        if len(group) == group_size:
            held -= group_size
            for positive, negative in incomplete.pop(query_id):
                complete.append(query_id, positive, [negative])
            queries.append(query_id)
            done.add(query_id)
            if max_queries and len(queries) == max_queries:
                break
        held_at_most = max(held_at_most, held)
    return Groups(complete, queries, held_at_most)
