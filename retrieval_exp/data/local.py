"""Register a local BEIR-format folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv, and optionally docpairs.tsv:
query id, positive doc id, negative doc id per line, as ir_datasets' docpairs; and scoreddocs/<split>.run: a TREC run
of a first stage, as ir_datasets' scoreddocs) as an ir_datasets id.

Lets users bring their own collection, and lets the tests run offline on the tiny fixture, with the same
loading code as any ir_datasets id.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

import ir_datasets
from ir_datasets.datasets.base import Dataset
from ir_datasets.datasets.beir import BeirDocs, BeirQrels, BeirQueries, BeirTitleDoc
from ir_datasets.formats import GenericQuery, TrecScoredDocs, TsvDocPairs

from retrieval_exp.data.qrecc import register_qrecc
from retrieval_exp.errors import UserError
from retrieval_exp.retrieval.run import check_run


class _File:
    """The file-handle provider ir_datasets' format classes read from."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def path(self, force: bool = True) -> Path:
        return self._path

    @contextlib.contextmanager
    def stream(self) -> Iterator[IO[bytes]]:
        with self._path.open("rb") as handle:
            yield handle


class _LocalBeirDocs(BeirDocs):
    """BEIR documents streamed straight from the jsonl file (no docstore written into IR_DATASETS_HOME)."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path), _File(path), BeirTitleDoc)

    def docs_iter(self) -> Iterator[BeirTitleDoc]:
        return self._docs_iter()

    def docs_store(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError("local collections are read whole, not through a docstore")

    def docs_count(self) -> int:
        return sum(1 for _ in self._docs_iter())


class _SplitQueries(BeirQueries):
    """The queries of one split: BEIR folders keep all splits' queries in one queries.jsonl. A query judged in no
    split's qrels belongs to every split, so that an evaluation sees it and counts it as unjudged (CISI has 36)."""

    def __init__(self, path: Path, qrels: Path) -> None:
        super().__init__(str(path), _File(path), GenericQuery)
        self._ids = _judged(qrels)
        self._elsewhere = set().union(*(_judged(other) for other in qrels.parent.glob("*.tsv") if other != qrels))

    def queries_iter(self) -> Iterator[GenericQuery]:
        return (q for q in super().queries_iter() if q.query_id in self._ids or q.query_id not in self._elsewhere)


def _judged(qrels: Path) -> set[str]:
    """The query ids of a BEIR qrels file."""
    return {query_id for _, (query_id, _) in _judgments(qrels)}


def register_beir_folder(dataset_id: str, folder: str | Path, split: str | None = None, pool: bool = False) -> None:
    """Register `folder` under `dataset_id`; with `split`, only that split's queries and its qrels/<split>.tsv.
    `pool`: the corpus is a pool of first-stage candidates, whose qrels also judge documents outside it (TREC DL's
    top-100 pools). Every file is checked first (one line for a malformed line, or for qrels that judge a query or
    document the folder lacks). Idempotent per process."""
    root = Path(folder).expanduser().resolve()
    files = {"corpus": root / "corpus.jsonl", "queries": root / "queries.jsonl"}
    if split:
        files["qrels"] = root / "qrels" / f"{split}.tsv"
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise UserError(f"cannot register {dataset_id!r}: missing {', '.join(missing)} (a BEIR folder is expected)")
    if dataset_id in ir_datasets.registry._registered:
        return
    _check_judgments(files, pool)
    parts: list[object] = [_LocalBeirDocs(files["corpus"])]
    if split:
        parts += [_SplitQueries(files["queries"], files["qrels"]), BeirQrels(_File(files["qrels"]), {})]
    else:
        parts.append(BeirQueries(str(root), _File(files["queries"]), GenericQuery))
    if split and (root / "scoreddocs" / f"{split}.run").is_file():
        check_run(root / "scoreddocs" / f"{split}.run")
        parts.append(TrecScoredDocs(_File(root / "scoreddocs" / f"{split}.run")))
    if (root / "docpairs.tsv").is_file():
        parts.append(TsvDocPairs(_File(root / "docpairs.tsv")))
    ir_datasets.registry.register(dataset_id, Dataset(*parts))


def _check_judgments(files: Mapping[str, Path], pool: bool) -> None:
    """Corpus and queries are JSON lines with an _id; each qrels line judges a query and (unless the corpus is a
    pool) a document of the folder: a judgment of a missing document would count as a miss in every run."""
    doc_ids, query_ids = _ids(files["corpus"]), _ids(files["queries"])
    if "qrels" not in files:
        return
    for number, (query_id, doc_id) in _judgments(files["qrels"]):
        if query_id not in query_ids:
            unknown = f"query {query_id!r}, which queries.jsonl"
        elif doc_id not in doc_ids and not pool:
            unknown = f"document {doc_id!r}, which corpus.jsonl"
        else:
            continue
        raise UserError(
            f"{files['qrels']}:{number} judges {unknown} does not have: fix the ids (a pool of candidates is "
            "registered with pool: true)"
        )


def _ids(path: Path) -> set[str]:
    ids = set()
    with path.open() as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    ids.add(str(json.loads(line)["_id"]))
                except (ValueError, KeyError, TypeError) as err:
                    raise UserError(f"{path}:{number} is not a JSON object with an _id ({err}): fix the line") from None
    return ids


def _judgments(qrels: Path) -> Iterator[tuple[int, tuple[str, str]]]:
    """(line number, (query id, doc id)) of a BEIR qrels file (its header line skipped), each line checked."""
    with qrels.open() as rows:
        for number, line in enumerate(rows, 1):
            if number == 1 or not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 3 or not fields[2].strip().lstrip("-").isdigit():
                raise UserError(f"{qrels}:{number} is not 'query-id<TAB>corpus-id<TAB>score' (score an integer)")
            yield number, (fields[0], fields[1])


def register_all(entries: Mapping[str, Mapping[str, str]] | None) -> None:
    """Register every entry of a data config's `register` block: `id: {folder, split}` for a BEIR folder,
    `id: {qrecc: file}` for a QReCC JSON file; `pool: true` marks a folder whose corpus is a pool of candidates."""
    for dataset_id, entry in (entries or {}).items():
        if "qrecc" in entry:
            register_qrecc(dataset_id, entry["qrecc"])
        else:
            register_beir_folder(dataset_id, entry["folder"], entry.get("split"), bool(entry.get("pool", False)))
