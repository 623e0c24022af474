"""The shapes of IR data that every layer shares: runs, qrels and corpora. Kept apart from data/ (which reads them)
and retrieval/ (which makes runs), so that neither imports the other for its types."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

Run = dict[str, dict[str, float]]  # query id -> doc id -> score
Qrels = dict[str, dict[str, int]]  # query id -> doc id -> relevance label


@dataclass(frozen=True)
class Corpus:
    """All documents of a dataset, in ir_datasets order; `key` identifies its content for caches (BM25 indexes,
    document embeddings)."""

    key: str
    ids: list[str]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def batches(self, size: int) -> Iterator[tuple[list[str], list[str]]]:
        """(ids, texts) of `size` documents at a time, in order: what an indexer that streams the corpus reads."""
        for start in range(0, len(self.ids), size):
            yield self.ids[start : start + size], self.texts[start : start + size]

    def texts_of(self, doc_ids: Iterable[str]) -> dict[str, str]:
        """The texts of those of `doc_ids` the corpus has: the look-up of a re-ranker, which reads a few documents."""
        wanted = set(doc_ids)
        return {doc_id: text for doc_id, text in zip(self.ids, self.texts) if doc_id in wanted}


def content_key(ids: Iterable[str], texts: Iterable[str]) -> str:
    """A digest of the documents themselves: the same texts under the same ids give the same key, whichever loader
    read them (no optional loader method such as docs_namespace() is relied on; classic collections lack some)."""
    return streamed_content_key(zip(ids, texts))


def streamed_content_key(documents: Iterable[tuple[str, str]]) -> str:
    """content_key of (id, text) pairs as they stream past, so that a corpus need not be held to be named."""
    digest, count = hashlib.sha1(), 0
    for doc_id, text in documents:
        digest.update(f"{doc_id}\x1f{text}\x1e".encode())
        count += 1
    return f"{count}:{digest.hexdigest()[:20]}"


NO_DOCUMENTS = Corpus("no documents", [], [])  # what a retriever that reads none (needs_corpus False) is given


def ranked(docs: dict[str, float]) -> list[tuple[str, float]]:
    """Documents best first; equal scores ordered by doc id so that files are deterministic."""
    return sorted(docs.items(), key=lambda item: (-item[1], item[0]))
