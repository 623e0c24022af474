"""Runs (query id -> doc id -> score) and their TREC file form."""

from __future__ import annotations

from pathlib import Path

Run = dict[str, dict[str, float]]


def ranked(docs: dict[str, float]) -> list[tuple[str, float]]:
    """Documents best first; equal scores ordered by doc id so that files are deterministic."""
    return sorted(docs.items(), key=lambda item: (-item[1], item[0]))


def write_trec(run: Run, path: Path, tag: str) -> None:
    """Write `run` as a TREC run file (qid Q0 docid rank score tag)."""
    with path.open("w") as out:
        for query_id in sorted(run):
            for rank, (doc_id, score) in enumerate(ranked(run[query_id]), start=1):
                out.write(f"{query_id} Q0 {doc_id} {rank} {score:.6f} {tag}\n")


def read_trec(path: Path) -> Run:
    """Read a TREC run file."""
    run: Run = {}
    with path.open() as lines:
        for line in lines:
            query_id, _, doc_id, _, score, *_ = line.split()
            run.setdefault(query_id, {})[doc_id] = float(score)
    return run
