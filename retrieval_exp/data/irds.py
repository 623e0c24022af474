"""Queries, documents and qrels read through ir_datasets, with one-line errors for ids that cannot serve."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from itertools import islice
from typing import Any

import ir_datasets

from retrieval_exp.data import held_out
from retrieval_exp.errors import UserError
from retrieval_exp.ir_types import Corpus, Qrels, streamed_content_key

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
    return list(_rows(dataset_id, what, rows))


def _rows(dataset_id: str, what: str, rows: Any) -> Iterator[Any]:
    """`rows` one by one, an unreadable file (a cache without the data) one line."""
    try:
        yield from rows
    except OSError as err:
        raise UserError(
            f"cannot read the {what} of {dataset_id!r} ({err}): without internet, fill IR_DATASETS_HOME first "
            "(README, 'Offline use')"
        ) from None


class DatasetCorpus(Corpus):
    """An ir_datasets corpus whose texts are held only where something asks for all of them at once (`texts`): its
    key and ids come from streamed passes that keep no text, BM25 indexing and encoding read it in batches
    (`batches`), and a re-ranker's look-up of its candidates (`texts_of`) goes through the dataset's docstore, so that
    re-ranking TREC DL's top 1000 reads a few thousand of MS MARCO's 8.8M passages."""

    dataset_id: str

    def __init__(self, dataset_id: str) -> None:
        object.__setattr__(self, "dataset_id", dataset_id)

    def __repr__(self) -> str:  # the dataclass's would read every document
        return f"DatasetCorpus({self.dataset_id!r})"

    @property
    def key(self) -> str:
        return _key(self.dataset_id)

    @property
    def ids(self) -> list[str]:
        return _ids(self.dataset_id)

    @property
    def texts(self) -> list[str]:
        return _texts(self.dataset_id)

    def batches(self, size: int) -> Iterator[tuple[list[str], list[str]]]:
        """Streamed from the dataset: only `size` documents are held."""
        ids: list[str] = []
        texts: list[str] = []
        for doc_id, text in _documents(self.dataset_id):
            ids.append(doc_id)
            texts.append(text)
            if len(ids) == size:
                yield ids, texts
                ids, texts = [], []
        if ids:
            yield ids, texts

    def texts_of(self, doc_ids: Iterable[str]) -> dict[str, str]:
        return documents(self.dataset_id, set(doc_ids))


def corpus(dataset_id: str) -> Corpus:
    """The documents as text: title and body joined, as BEIR, MTEB and pyserini's flat indexes do; read as each use
    needs them (DatasetCorpus)."""
    return DatasetCorpus(dataset_id)


def _documents(dataset_id: str) -> Iterator[tuple[str, str]]:
    """(id, text) of every document, one at a time."""
    for doc in _rows(dataset_id, "documents", load(dataset_id).docs_iter()):
        yield doc.doc_id, _text(doc)


def _text(doc: Any) -> str:
    return str(doc.default_text().strip())


@lru_cache(maxsize=4)
def _texts(dataset_id: str) -> list[str]:
    """Every document's text, in order: the corpus read whole (what only a whole-corpus ranking in memory needs)."""
    return [text for _, text in _documents(dataset_id)]


@lru_cache(maxsize=4)
def _ids(dataset_id: str) -> list[str]:
    """The corpus's ids in order, from one streamed pass that keeps no text."""
    return [doc_id for doc_id, _ in _documents(dataset_id)]


@lru_cache(maxsize=16)
def _key(dataset_id: str) -> str:
    """The corpus's content key (content_key of the whole corpus), from a streamed pass that keeps nothing (BM25
    needs the key alone, not the ids)."""
    return streamed_content_key(_documents(dataset_id))


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
    store = _docstore(dataset_id)
    if store is None:
        return Corpus.texts_of(corpus(dataset_id), doc_ids)  # the whole corpus's look-up, not the docstore's
    return {doc_id: _text(doc) for doc_id, doc in store.get_many(doc_ids).items()}


def _docstore(dataset_id: str) -> Any | None:
    """The dataset's docstore, or None for a loader without one."""
    try:
        return load(dataset_id).docs_store()
    except (NotImplementedError, AttributeError):
        return None


class DocumentTexts(Mapping[str, str]):
    """A dataset's document texts, each looked up when it is read: through the docstore where the dataset has one, so
    that a sampler over MS MARCO holds ids, not 8.8M passages; else the corpus read whole. Pickles as its dataset id
    (data-loader workers open their own docstore)."""

    def __init__(self, dataset_id: str) -> None:
        self.dataset_id = dataset_id
        self._store: Any | None = None
        self._whole: dict[str, str] | None = None

    def __getstate__(self) -> dict[str, str]:
        return {"dataset_id": self.dataset_id}

    def __setstate__(self, state: dict[str, str]) -> None:
        self.__init__(state["dataset_id"])  # type: ignore[misc]

    def _source(self) -> Any:  # the docstore, or the corpus as a dict
        if self._store is None and self._whole is None:
            self._store = _docstore(self.dataset_id)
            if self._store is None:
                collection = corpus(self.dataset_id)
                self._whole = dict(zip(collection.ids, collection.texts))
        return self._whole if self._whole is not None else self._store

    def __getitem__(self, doc_id: str) -> str:
        source = self._source()
        if isinstance(source, dict):
            return source[doc_id]
        found = source.get_many([doc_id])
        if doc_id not in found:
            raise KeyError(doc_id)
        return _text(found[doc_id])

    def __iter__(self) -> Iterator[str]:  # every id: one streamed pass over the corpus
        return iter(corpus(self.dataset_id).ids)

    def __len__(self) -> int:
        return len(corpus(self.dataset_id))
