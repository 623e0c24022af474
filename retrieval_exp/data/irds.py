"""Queries, documents and qrels read through ir_datasets, with one-line errors for ids that cannot serve."""

from __future__ import annotations

import logging
from functools import lru_cache
from itertools import islice
from typing import Any

import ir_datasets

from retrieval_exp.data import held_out
from retrieval_exp.errors import UserError
from retrieval_exp.ir_types import Corpus, Qrels, content_key

logging.getLogger("ir_datasets").setLevel(logging.WARNING)


def load(dataset_id: str) -> Any:
    """The ir_datasets dataset for `dataset_id`, or a UserError naming the bad id."""
    try:
        return ir_datasets.load(dataset_id)
    except KeyError:
        if held_out.register_if_held_out(dataset_id):
            return ir_datasets.load(dataset_id)
        raise UserError(
            f"unknown dataset id {dataset_id!r}: use an ir_datasets id such as 'beir/scifact/test', "
            "or register a local BEIR folder under data.register"
        ) from None


def require(dataset_id: str, *parts: str) -> None:
    """Fail with one line unless the dataset provides each of `parts` (docs, queries, qrels)."""
    dataset = load(dataset_id)
    missing = [part for part in parts if not getattr(dataset, f"has_{part}")()]
    if missing:
        raise UserError(
            f"dataset {dataset_id!r} has no {' and no '.join(missing)}: choose a split that has them "
            "(e.g. 'beir/scifact/test' rather than 'beir/scifact')"
        )


def _read(dataset_id: str, what: str, rows: Any) -> list[Any]:
    try:
        return list(rows)
    except OSError as err:
        raise UserError(
            f"cannot read the {what} of {dataset_id!r} ({err}): without internet, fill IR_DATASETS_HOME first "
            "(README, 'Offline use')"
        ) from None


@lru_cache(maxsize=4)
def corpus(dataset_id: str) -> Corpus:
    """The documents as text: title and body joined, as BEIR, MTEB and pyserini's flat indexes do."""
    docs = _read(dataset_id, "documents", load(dataset_id).docs_iter())
    ids, texts = [doc.doc_id for doc in docs], [doc.default_text().strip() for doc in docs]
    return Corpus(content_key(ids, texts), ids, texts)


def require_readable(dataset_id: str) -> None:
    """Fail with one line unless the first document, the queries and the qrels can be read now (files in the cache,
    folders in place): a collection that cannot load fails at start-up, not after training."""
    dataset = load(dataset_id)
    _read(dataset_id, "documents", islice(dataset.docs_iter(), 1))
    queries(dataset_id)
    qrels(dataset_id)


@lru_cache(maxsize=16)  # a benchmark's collections (checked at start-up, read again to search) and training data
def queries(dataset_id: str) -> dict[str, str]:
    """Query id to query text."""
    rows = _read(dataset_id, "queries", load(dataset_id).queries_iter())
    return {query.query_id: query.default_text() for query in rows}


@lru_cache(maxsize=16)
def qrels(dataset_id: str) -> Qrels:
    """Query id to {doc id: relevance}."""
    table: Qrels = {}
    for qrel in _read(dataset_id, "qrels", load(dataset_id).qrels_iter()):
        table.setdefault(qrel.query_id, {})[qrel.doc_id] = qrel.relevance
    return table


def documents(dataset_id: str, doc_ids: set[str]) -> dict[str, str]:
    """Texts of `doc_ids`: from the dataset's docstore where it has one (MS MARCO), else from the corpus (a loader
    without docs_store() at all, as some classic ones, included)."""
    dataset = load(dataset_id)
    try:
        found = dataset.docs_store().get_many(doc_ids)
        return {doc_id: doc.default_text().strip() for doc_id, doc in found.items()}
    except (NotImplementedError, AttributeError):
        collection = corpus(dataset_id)
        return {d: t for d, t in zip(collection.ids, collection.texts) if d in doc_ids}
