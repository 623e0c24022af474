"""Measures through ir_measures, and the files every run leaves: run.trec, perquery.tsv, metrics.json."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ir_measures

from retrieval_exp.errors import UserError
from retrieval_exp.ir_types import Qrels, Run, ranked
from retrieval_exp.retrieval.run import write_trec
from retrieval_exp.settings import Positive

RESULT_FILES = ("run.trec", "perquery.tsv", "metrics.json")  # what write_outputs writes


@dataclass(frozen=True)
class EvalSettings:
    """The `eval` config node: measures, how deep each query's ranking is kept, identical-id handling, the cache of
    an unchanged model's document vectors."""

    measures: list[str]
    depth: Positive = 1000
    ignore_identical_ids: bool | None = None
    embedding_cache: str | None = None


def parse_measures(names: Sequence[str]) -> list[Any]:
    """ir_measures objects for names like 'nDCG@10', or a UserError naming the bad one."""
    measures = []
    for name in names:
        try:
            measures.append(ir_measures.parse_measure(name))
        except (NameError, ValueError, SyntaxError):
            raise UserError(
                f"eval.measures has {name!r}, which ir_measures cannot parse (try 'nDCG@10', 'R@100')"
            ) from None
    return measures


def cut(run: Run, depth: int, ignore_identical_ids: bool) -> Run:
    """The top `depth` of each query; with `ignore_identical_ids`, a document whose id is the query's is dropped
    first (pyserini's --remove-query; right where queries are documents of the corpus, as in BEIR's ArguAna)."""
    trimmed: Run = {}
    for query_id, docs in run.items():
        kept = [(d, s) for d, s in ranked(docs) if not (ignore_identical_ids and d == query_id)]
        trimmed[query_id] = dict(kept[:depth])
    return trimmed


@dataclass
class Evaluation:
    run: Run
    metrics: dict[str, float]
    per_query: list[tuple[str, str, float]]


def evaluate(run: Run, qrels: Qrels, measure_names: Sequence[str]) -> Evaluation:
    """Aggregate and per-query values of each measure, keyed by its ir_measures name."""
    measures = parse_measures(measure_names)
    metrics = {str(m): float(v) for m, v in ir_measures.calc_aggregate(measures, qrels, run).items()}
    per_query = sorted(
        (m.query_id, str(m.measure), float(m.value)) for m in ir_measures.iter_calc(measures, qrels, run)
    )
    return Evaluation(run, dict(sorted(metrics.items())), per_query)


def write_outputs(evaluation: Evaluation, out_dir: Path, tag: str) -> None:
    """run.trec and perquery.tsv, then metrics.json last and atomically: it exists only for a finished run."""
    write_trec(evaluation.run, out_dir / "run.trec", tag)
    with (out_dir / "perquery.tsv").open("w") as out:
        out.write("query_id\tmeasure\tvalue\n")
        out.writelines(f"{q}\t{m}\t{v:.6f}\n" for q, m, v in evaluation.per_query)
    write_metrics(evaluation.metrics, out_dir)


def write_metrics(metrics: dict[str, float], out_dir: Path) -> None:
    """metrics.json, atomically: it exists only for a finished run (or a finished collection of a benchmark)."""
    partial = out_dir / "metrics.json.partial"
    partial.write_text(json.dumps(metrics, indent=2) + "\n")
    os.replace(partial, out_dir / "metrics.json")


def read_metrics(out_dir: Path) -> dict[str, float] | None:
    """The measures a finished run left in `out_dir` (write_outputs' metrics.json), or None."""
    path = out_dir / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None
