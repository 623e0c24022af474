"""Runs (query id -> doc id -> score): their files (TREC, gzipped TREC, parquet) and stored first stages that serve
them as a retriever does."""

from __future__ import annotations

import gzip
import logging
import os
import urllib.request
from itertools import islice
from pathlib import Path

from retrieval_exp.data import irds
from retrieval_exp.errors import UserError
from retrieval_exp.interfaces import Retriever
from retrieval_exp.ir_types import Corpus, Run, ranked

log = logging.getLogger(__name__)
PARQUET_COLUMNS = {  # our name: the names run files use for it (lightning-ir, BEIR on Hugging Face, pyterrier)
    "query_id": ("query_id", "qid", "query-id"),
    "doc_id": ("doc_id", "docid", "docno", "corpus-id"),
}


def write_trec(run: Run, path: Path, tag: str) -> None:
    """Write `run` as a TREC run file (qid Q0 docid rank score tag)."""
    with path.open("w") as out:
        for query_id in sorted(run):
            for rank, (doc_id, score) in enumerate(ranked(run[query_id]), start=1):
                out.write(f"{query_id} Q0 {doc_id} {rank} {score:.6f} {tag}\n")


def read_trec(path: Path, limit: int | None = None) -> Run:
    """Read a TREC run file (whitespace-separated, as Rank-DistiLLM's tab-separated .run files; .gz read as such),
    its first `limit` lines when given. A line that is not `qid Q0 docid rank score [tag]`, or a file that does not
    decompress, is one line naming the file and the line."""
    run: Run = {}
    number = 0
    try:
        with gzip.open(path, "rt") if path.suffix == ".gz" else path.open() as lines:
            for line in islice(lines, limit):
                number += 1
                fields = line.split()
                if fields and len(fields) < 5:
                    raise ValueError(f"{len(fields)} fields")
                if fields:
                    run.setdefault(fields[0], {})[fields[2]] = float(fields[4])
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise UserError(f"run file {str(path)!r} cannot be read ({err}): is it a TREC run, gzipped if .gz?") from None
    except ValueError as err:
        raise UserError(
            f"run file {str(path)!r}, line {number}, is not a TREC run line 'qid Q0 docid rank score tag' ({err})"
        ) from None
    return run


def parquet_columns(path: Path) -> dict[str, str]:
    """A parquet run's id columns, renamed to ours, from its schema alone; a file that is not a parquet run is one
    line."""
    import pyarrow.parquet

    try:
        columns = set(pyarrow.parquet.read_schema(path).names)
    except (OSError, pyarrow.ArrowException) as err:
        raise UserError(f"run file {str(path)!r} is not a readable parquet file ({err})") from None
    names = {}
    for ours, theirs in PARQUET_COLUMNS.items():
        found = [name for name in theirs if name in columns]
        if not found:
            raise UserError(f"{path} has no {ours} column (one of {', '.join(theirs)}): it is not a run")
        names[found[0]] = ours
    if "score" not in columns and "rank" not in columns:
        raise UserError(f"{path} has neither a score nor a rank column: it is not a run")
    return names


def read_parquet(path: Path) -> Run:
    """Read a parquet run: query and doc id columns under any of PARQUET_COLUMNS' names, and `score`; a file with
    only `rank` scores each document -rank."""
    import pandas as pd

    names = parquet_columns(path)
    table = pd.read_parquet(path).rename(columns=names)
    scores = table["score"] if "score" in table.columns else -table["rank"]
    run: Run = {}
    for query_id, doc_id, score in zip(table["query_id"].astype(str), table["doc_id"].astype(str), scores):
        run.setdefault(query_id, {})[doc_id] = float(score)
    return run


def read_run(path: Path) -> Run:
    return read_parquet(path) if path.suffix == ".parquet" else read_trec(path)


def check_run(path: Path) -> None:
    """Read as much of a run file as tells it is one (a parquet schema, a TREC file's first lines), in
    milliseconds: a wrong or corrupt file fails at start-up, not when the run is needed."""
    if path.suffix == ".parquet":
        parquet_columns(path)
    else:
        read_trec(path, limit=100)


class RunFile(Retriever):
    """A stored first stage: serves the top `depth` of a run file (TREC, .gz or parquet), e.g. a teacher's ranking,
    or the run.trec of a run made by the suite. With `url`, a missing file is downloaded there first."""

    name = "run_file"
    needs_corpus = False

    def __init__(self, path: str, url: str | None = None) -> None:
        self.path, self.url = Path(path).expanduser(), url
        if self.path.is_file():
            check_run(self.path)
        elif url is None:
            raise UserError(f"run file {str(self.path)!r} does not exist: give the path of a run file")

    def fetch(self) -> Path:
        """The file, downloaded first (atomically) when it is missing and there is a URL."""
        if self.path.is_file():
            return self.path
        if self.url is None:
            raise UserError(f"run file {str(self.path)!r} does not exist: give the path of a run file")
        log.info("downloading %s to %s", self.url, self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f"{self.path.name}.partial-{os.getpid()}")
        try:
            urllib.request.urlretrieve(self.url, partial)
        except OSError as err:
            partial.unlink(missing_ok=True)
            raise UserError(
                f"run file {str(self.path)!r} is missing and {self.url} cannot be reached ({err}): download it there"
            ) from None
        os.replace(partial, self.path)
        return self.path

    def search(self, corpus: Corpus | None, queries: dict[str, str], depth: int) -> Run:
        run = read_run(self.fetch())
        return {q: dict(ranked(run.get(q, {}))[:depth]) for q in queries}


class DatasetRun(Retriever):
    """The first stage a dataset ships as ir_datasets scoreddocs (for TREC DL, the official BM25 top-1000)."""

    name = "scoreddocs"
    needs_corpus = False

    def __init__(self, dataset: str) -> None:
        self.dataset = dataset

    def search(self, corpus: Corpus | None, queries: dict[str, str], depth: int) -> Run:
        irds.require(self.dataset, "scoreddocs")
        run: Run = {}
        for scored in irds.load(self.dataset).scoreddocs_iter():
            if scored.query_id in queries:
                run.setdefault(scored.query_id, {})[scored.doc_id] = scored.score
        return {q: dict(ranked(docs)[:depth]) for q, docs in run.items()}
