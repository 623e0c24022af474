"""Runs (query id -> doc id -> score) and their TREC file form."""

from __future__ import annotations

from pathlib import Path

from retrieval_exp.errors import UserError

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


class RunFile:
    """A stored first stage: serves the top `depth` of a TREC run file, e.g. the run.trec of a dense run made by the
    suite (`experiment=zero_shot data.test=<train split>`), as the miner of hard negatives."""

    name = "run_file"
    needs_encoder = False

    def __init__(self, path: str) -> None:
        self.path = Path(path).expanduser()

    def search(self, corpus: object, queries: dict[str, str], depth: int) -> Run:
        if not self.path.is_file():
            raise UserError(f"run file {str(self.path)!r} does not exist: give the path of a TREC run")
        run = read_trec(self.path)
        return {q: dict(ranked(run.get(q, {}))[:depth]) for q in queries}
