"""Evaluate any TREC run file against any ir_datasets qrels, the way the suite evaluates its own runs, so that an
external run (a paper's published run file, another toolkit's output) sits in the same tables:

    python -m retrieval_exp.evaluate RUN --dataset beir/scifact/test [--out DIR] [--experiment NAME]

With --out, writes run.trec (cut to --depth), perquery.tsv and metrics.json there. With --experiment, also records an
MLflow run (tag method=external, or --method) with those files, beside the suite's runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from retrieval_exp.data import irds
from retrieval_exp.data.local import register_beir_folder
from retrieval_exp.errors import UserError
from retrieval_exp.measures import RESULT_FILES, cut, evaluate, write_outputs
from retrieval_exp.retrieval.run import RunFile, read_run
from retrieval_exp.tracking.mlflow_run import TrackedRun, add_store_argument, open_experiment


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m retrieval_exp.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run file: TREC (qid Q0 docid rank score tag; .gz gzipped) or parquet")
    parser.add_argument("--dataset", required=True, help="ir_datasets id with qrels, e.g. beir/scifact/test")
    parser.add_argument("--measures", nargs="+", default=["nDCG@10", "R@100", "RR@10"])
    parser.add_argument("--depth", type=int, default=1000, help="documents per query that count (default 1000)")
    parser.add_argument("--ignore-identical-ids", action="store_true",
                        help="drop a document whose id is the query's (only where queries are documents)")  # fmt: skip
    parser.add_argument("--register", action="append", default=[], metavar="ID=FOLDER[:SPLIT]",
                        help="register a local BEIR folder as an ir_datasets id first")  # fmt: skip
    parser.add_argument("--out", type=Path, help="directory for run.trec, perquery.tsv, metrics.json")
    parser.add_argument("--experiment", help="also record an MLflow run in this experiment")
    add_store_argument(parser)
    parser.add_argument("--artifact-root", default="results/mlartifacts")
    parser.add_argument("--method", default="external", help="the run's `method` tag (default: external)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    args = _arguments(argv)
    try:
        for entry in args.register:
            dataset_id, _, location = entry.partition("=")
            folder, _, split = location.partition(":")
            register_beir_folder(dataset_id, folder, split or None)
        irds.require(args.dataset, "qrels")
        run = cut(read_run(RunFile(str(args.run)).path), args.depth, args.ignore_identical_ids)
        evaluation = evaluate(run, irds.qrels(args.dataset), args.measures)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{args.run} on {args.dataset}: " + "  ".join(f"{m} {v:.4f}" for m, v in evaluation.metrics.items()))
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        if args.out or args.experiment:
            out.mkdir(parents=True, exist_ok=True)
            write_outputs(evaluation, out, tag=args.method)
        if args.experiment:
            _record(args, evaluation.metrics, out)
    return evaluation.metrics


def _record(args: argparse.Namespace, metrics: dict[str, float], out: Path) -> None:
    client, experiment_id = open_experiment(args.tracking_uri, args.artifact_root, args.experiment)
    tags = {"method": args.method, "dataset": args.dataset, "source_run_file": str(args.run.resolve())}
    params = {"eval.measures": str(args.measures), "eval.depth": str(args.depth)}
    tracked = TrackedRun.start(client, experiment_id, f"{args.method} · {args.run.name}", tags, params)
    tracked.log_metrics(metrics)
    tracked.log_artifacts(out / name for name in RESULT_FILES)
    tracked.finish("FINISHED")
    print(f"  MLflow run {tracked.run_id} (experiment {args.experiment!r}, {args.tracking_uri})")


if __name__ == "__main__":
    main()
