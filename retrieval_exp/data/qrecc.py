"""QReCC's JSON turns as an ir_datasets id (Method 3's data, docs/METHODS.md, section 3).

Each turn gives a query (`Rewrite`, else `Question`, else `query`) and its one relevant document, the turn's answer
(`Answer`, else the joined `relevant_passages`, else the joined `Context`); a turn is kept when the query is longer
than 5 characters and the document longer than 10, as the authors filter. Query id `<conversation>_<turn>`, doc id
the same with `_a` (distinct, so that dropping identical ids at evaluation never drops the answer). Registered as
docs + queries + qrels, the training pairs come from the qrels like any dataset's, and a test file's answers form the
pool that its queries are ranked over.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import ir_datasets
from ir_datasets.datasets.base import Dataset
from ir_datasets.formats import BaseDocs, BaseQrels, BaseQueries, GenericDoc, GenericQuery, TrecQrel

from retrieval_exp.errors import UserError

MIN_QUERY_CHARS, MIN_DOC_CHARS = 5, 10


def _text(turn: Mapping[str, Any], *fields: str) -> str:
    """The first of `fields` that holds text; lists of passages are joined with spaces."""
    for field in fields:
        value = turn.get(field)
        if isinstance(value, list):
            value = " ".join(str(part) for part in value)
        if value and str(value).strip():
            return str(value).strip()
    return ""


def read_turns(path: Path) -> list[tuple[str, str, str]]:
    """(query id, query, answer) of every turn that passes the length filter."""
    try:
        turns = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read QReCC file {str(path)!r}: {err}") from None
    pairs = []
    for number, turn in enumerate(turns):
        query = _text(turn, "Rewrite", "Question", "query")
        answer = _text(turn, "Answer", "relevant_passages", "Context")
        if len(query) > MIN_QUERY_CHARS and len(answer) > MIN_DOC_CHARS:
            query_id = f"{turn.get('Conversation_no', number)}_{turn.get('Turn_no', 0)}"
            pairs.append((query_id, query, answer))
    return pairs


class _Docs(BaseDocs):
    def __init__(self, docs: list[GenericDoc]) -> None:
        self._docs = docs

    def docs_iter(self) -> Iterator[GenericDoc]:
        return iter(self._docs)

    def docs_count(self) -> int:
        return len(self._docs)

    def docs_store(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError("QReCC answers are read whole, not through a docstore")


class _Queries(BaseQueries):
    def __init__(self, queries: list[GenericQuery]) -> None:
        self._queries = queries

    def queries_iter(self) -> Iterator[GenericQuery]:
        return iter(self._queries)


class _Qrels(BaseQrels):
    def __init__(self, qrels: list[TrecQrel]) -> None:
        self._qrels = qrels

    def qrels_iter(self) -> Iterator[TrecQrel]:
        return iter(self._qrels)

    def qrels_defs(self) -> dict[int, str]:
        return {1: "the turn's answer"}


def register_qrecc(dataset_id: str, file: str | Path) -> None:
    """Register a QReCC JSON file (e.g. qrecc-training.json) under `dataset_id`. Idempotent per process."""
    path = Path(file).expanduser().resolve()
    if not path.is_file():
        raise UserError(f"cannot register {dataset_id!r}: no QReCC file at {str(path)!r} (set data.folder)")
    if dataset_id in ir_datasets.registry._registered:
        return
    turns = read_turns(path)
    ir_datasets.registry.register(
        dataset_id,
        Dataset(
            _Docs([GenericDoc(f"{q}_a", answer) for q, _, answer in turns]),
            _Queries([GenericQuery(q, query) for q, query, _ in turns]),
            _Qrels([TrecQrel(q, f"{q}_a", 1, "0") for q, _, _ in turns]),
        ),
    )
