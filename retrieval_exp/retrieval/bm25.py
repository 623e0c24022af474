"""Lucene BM25 through pyserini. The index is built once per collection and reused across runs."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Annotated

from tqdm.auto import tqdm

from retrieval_exp.interfaces import Retriever
from retrieval_exp.ir_types import Corpus, Run
from retrieval_exp.retrieval import jvm
from retrieval_exp.settings import AtLeast, AtMost, NonNegativeFloat, Positive

logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # pyserini imports faiss; its probing is noise


def default_index_root() -> Path:
    return Path(os.environ.get("RETRIEVAL_EXP_CACHE", Path.home() / ".cache" / "retrieval_exp")) / "bm25"


class BM25(Retriever):
    """BM25 over one field (title and text joined), as pyserini's BEIR "flat" indexes.

    k1 and b are search-time settings, so one index serves every (k1, b); the index is keyed by the collection,
    the document text and the pyserini version.
    """

    name = "bm25"

    def __init__(
        self,
        k1: NonNegativeFloat = 0.9,
        b: Annotated[float, AtLeast(0), AtMost(1)] = 0.4,
        threads: Positive = 2,
        index_root: str | None = None,
    ) -> None:
        self.k1, self.b, self.threads = k1, b, threads
        self.index_root = Path(index_root).expanduser() if index_root else default_index_root()

    def index(self, corpus: Corpus) -> Path:
        """The Lucene index of `corpus`, built on first use (atomically, so concurrent runs never see half)."""
        key = hashlib.sha1(f"{corpus.key}|flat|pyserini-{version('pyserini')}".encode()).hexdigest()[:16]
        path = self.index_root / key
        if any(path.glob("segments_*")):
            return path
        jvm.start()
        from pyserini.index.lucene import LuceneIndexer

        self.index_root.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f"{key}.partial-", dir=self.index_root))
        indexer = LuceneIndexer(str(partial), threads=self.threads)
        for ids, texts in tqdm(corpus.batches(10_000), desc="bm25 index", unit="batch", leave=False):
            indexer.add_batch_dict([{"id": i, "contents": t} for i, t in zip(ids, texts)])  # the corpus streams
        indexer.close()
        try:
            partial.rename(path)
        except OSError:  # another run finished the same index first
            shutil.rmtree(partial, ignore_errors=True)
        return path

    def search(self, corpus: Corpus, queries: dict[str, str], depth: int) -> Run:
        """Top-`depth` documents per query."""
        jvm.start()
        from pyserini.search.lucene import LuceneSearcher

        searcher = LuceneSearcher(str(self.index(corpus)))
        searcher.set_bm25(self.k1, self.b)
        query_ids = list(queries)
        hits = searcher.batch_search([queries[q] for q in query_ids], query_ids, k=depth, threads=self.threads)
        searcher.close()
        return {query_id: {hit.docid: float(hit.score) for hit in hits[query_id]} for query_id in query_ids}
