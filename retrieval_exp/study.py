"""A study read from MLflow, or from the records exported from it: its finished runs, each with its results per test
collection, grouped into systems (runs whose configs differ only by `seed`), with what distinguishes one system from
the others as its label.

    python -m retrieval_exp.study export SOURCE FOLDER [--tracking-uri URI]   # add SOURCE's finished runs to FOLDER
    python -m retrieval_exp.study has FOLDER KEY=VALUE...                     # exit 0 if a run there has them all

An exported study is one `<run id>.json` per run in a folder a repository can hold: everything the report reads but the
run files. A study run on several machines adds up there, and its report regenerates anywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from mlflow.entities import Metric
from mlflow.entities import Run as MlflowRun
from mlflow.tracking import MlflowClient

from retrieval_exp.errors import UserError
from retrieval_exp.tracking.mlflow_run import absolute_uri, add_store_argument, metric_key
from retrieval_exp.tuning import FINAL_OVERRIDES

COSTS = {"train s": "time/train_s", "steps": "train/steps", "peak MB": "memory/peak_rss_mb"}  # label -> metric
PerQuery = dict[str, dict[str, float]]  # measure -> query id -> value


@dataclass
class CollectionResult:
    """One run's result on one collection: its aggregate measures, per-query values and run file (None when read
    from an exported study: the run files stay in the store)."""

    metrics: dict[str, float]
    per_query: PerQuery
    run_file: Path | None


@dataclass
class StudyRun:
    run_id: str
    name: str
    method: str
    overrides: list[str]
    seed: str
    collections: dict[str, CollectionResult]
    costs: dict[str, float]
    loss_curve: list[tuple[int, float]]
    parent_run_id: str | None
    started_ms: int = 0  # the run's start time: systems are listed in order of first appearance
    tuning: dict[str, str] = field(default_factory=dict)  # of a search's final evaluation: its tuning.* tags

    @property
    def tuned_keys(self) -> set[str]:
        """The config keys a search chose (and the model it chose them for), which differ between seeds' searches."""
        return {*json.loads(self.tuning["best_params"]), "model.name_or_path"} if self.tuning else set()


@dataclass
class System:
    """Runs that differ only by seed; `label` is what sets it apart from the study's other systems."""

    key: tuple[str, ...]
    method: str
    runs: list[StudyRun] = field(default_factory=list)
    label: str = ""

    @property
    def collections(self) -> list[str]:
        """The collections every seed of the system was evaluated on, in the first run's order."""
        return [c for c in self.runs[0].collections if all(c in run.collections for run in self.runs)]

    def values(self, collection: str, measure: str) -> list[float]:
        """The measure on `collection`, one value per seed."""
        return [run.collections[collection].metrics[measure] for run in self.runs]

    def mean(self, collection: str, measure: str) -> float:
        return statistics.fmean(self.values(collection, measure))

    def seed_sd(self, collection: str, measure: str) -> float:
        """Standard deviation over seeds (0 for one seed)."""
        values = self.values(collection, measure)
        return statistics.stdev(values) if len(values) > 1 else 0.0

    def per_query_mean(self, collection: str, measure: str) -> dict[str, float]:
        """Each query's value averaged over seeds; a query a seed's run lacks counts 0 in that seed (trec_eval -c)."""
        tables = [run.collections[collection].per_query[measure] for run in self.runs]
        queries = sorted(set().union(*tables))
        return {q: float(np.mean([table.get(q, 0.0) for table in tables])) for q in queries}


def find_runs(
    client: MlflowClient, source: str, folder: Path, costs: dict[str, str], run_files: bool = True
) -> list[StudyRun]:
    """Finished, non-parent runs of experiment `source`, or of the sweep whose id is `source`, their artifacts
    downloaded under `folder` (the run files only if `run_files`)."""
    experiment = client.get_experiment_by_name(source)
    if experiment is not None:
        found = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    else:
        ids = [e.experiment_id for e in client.search_experiments()]
        found = client.search_runs(ids, f"tags.sweep_id = '{source}'", order_by=["attributes.start_time ASC"])
    finished = [
        r
        for r in found
        if r.info.status == "FINISHED"
        and "sweep_parent" not in r.data.tags
        and not r.data.tags.get("dataset", "").startswith("validation:")  # tuning trials: no test collection
    ]
    if not finished:
        raise UserError(f"no finished runs in experiment or sweep {source!r}: check the name and --tracking-uri")
    return [_load(client, record, folder / record.info.run_id, costs, run_files) for record in finished]


def _load(client: MlflowClient, record: MlflowRun, target: Path, costs: dict[str, str], run_files: bool) -> StudyRun:
    run_id, tags, metrics = record.info.run_id, record.data.tags, record.data.metrics
    benchmark = tags.get("dataset", "").startswith("benchmark:")
    names = tags.get("collections", "").split(",") if benchmark else [tags.get("dataset", "test")]
    target.mkdir(parents=True)
    collections = {}
    for name in names:
        folder = f"{name}/" if benchmark else ""
        table = Path(client.download_artifacts(run_id, folder + "perquery.tsv", str(target)))
        run_file = Path(client.download_artifacts(run_id, folder + "run.trec", str(target))) if run_files else None
        per_query: PerQuery = {}
        for line in table.read_text().splitlines()[1:]:
            query_id, measure, value = line.split("\t")
            per_query.setdefault(measure, {})[query_id] = float(value)
        prefix = metric_key(folder)
        aggregate = {m: metrics[prefix + metric_key(m)] for m in per_query if prefix + metric_key(m) in metrics}
        collections[name] = CollectionResult(aggregate, per_query, run_file)
    overrides = [re.sub(r"\\(.)", r"\1", o) for o in tags.get("overrides", "").split()]  # a sweep job's: escaped
    seed = next((o.split("=", 1)[1] for o in overrides if _key(o) == "seed"), "default")
    return StudyRun(
        run_id,
        record.info.run_name,
        tags.get("method", ""),
        overrides,
        seed,
        collections,
        {label: metrics[key] for label, key in costs.items() if key in metrics},
        _one_per_step(client.get_metric_history(run_id, "train/loss")),
        tags.get("mlflow.parentRunId"),
        record.info.start_time,
        {k.removeprefix("tuning."): v for k, v in tags.items() if k.startswith("tuning.")}
        if "tuning.final" in tags
        else {},
    )


def _one_per_step(history: Sequence[Metric]) -> list[tuple[int, float]]:
    """(step, value) of a metric's history, the last value logged at each step: a run that resumed after a crash
    logged the steps after its checkpoint twice, and the second time is the one its model went on from."""
    return sorted({m.step: m.value for m in sorted(history, key=lambda m: m.timestamp)}.items())


def export_runs(runs: Sequence[StudyRun], folder: Path) -> list[Path]:
    """Write each run as `<folder>/<run id>.json` (without its run files). Of runs with the same overrides (one row
    run again, say on another machine) only the latest started is kept. Returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    kept = {run.run_id: run for run in (read_exported(folder) if holds_exported(folder) else [])}
    written = []
    for run in runs:
        same = [old for old in kept.values() if old.run_id != run.run_id and set(old.overrides) == set(run.overrides)]
        if any(old.started_ms > run.started_ms for old in same):
            continue
        for old in same:
            (folder / f"{old.run_id}.json").unlink()
            del kept[old.run_id]
        kept[run.run_id] = run
        record = dataclasses.asdict(run)
        for result in record["collections"].values():
            del result["run_file"]
        path = folder / f"{run.run_id}.json"
        path.write_text(json.dumps(record, indent=1) + "\n")
        written.append(path)
    return written


def holds_exported(path: Path) -> bool:
    """Whether `path` is a folder of exported runs."""
    return path.is_dir() and any(path.glob("*.json"))


def read_exported(folder: Path) -> list[StudyRun]:
    """The runs `export_runs` wrote to `folder`, in order of their start."""
    records = [json.loads(path.read_text()) for path in folder.glob("*.json")]
    if not records:
        raise UserError(
            f"no exported runs (*.json) in {folder}: write them with `python -m retrieval_exp.study export`"
        )
    runs = []
    for record in records:
        record["collections"] = {
            name: CollectionResult(result["metrics"], result["per_query"], None)
            for name, result in record["collections"].items()
        }
        record["loss_curve"] = [(int(step), float(value)) for step, value in record["loss_curve"]]
        runs.append(StudyRun(**record))
    return sorted(runs, key=lambda run: (run.started_ms, run.run_id))


def matching(runs: Sequence[StudyRun], overrides: Sequence[str]) -> list[StudyRun]:
    """The runs whose overrides include every one of `overrides` (in any order)."""
    return [run for run in runs if set(overrides) <= set(run.overrides)]


def _key(override: str) -> str:
    """The config key an override sets: '+seed=3' -> 'seed'."""
    return override.split("=", 1)[0].lstrip("+~")


def group(runs: Sequence[StudyRun], across: Sequence[str] = ("seed",)) -> list[System]:
    """Systems in order of first appearance: runs whose overrides differ only in the keys `across` (the seed; also
    `init` where each seed's stage 2 starts from that seed's stage 1). Each is labelled by its overrides that not
    every system shares (those keys left out), or by its method when it has none of its own."""
    systems: dict[tuple[str, ...], System] = {}
    for run in runs:
        key = tuple(sorted(o for o in run.overrides if _key(o) not in {*across, *run.tuned_keys}))
        systems.setdefault(key, System(key, run.method)).runs.append(run)
    shared = set.intersection(*(set(system.key) for system in systems.values()))
    for system in systems.values():
        own = [o for o in system.key if o not in shared]
        tuning = system.runs[0].tuning
        if tuning:  # the final evaluation's own overrides say how it was run, not what it is
            own = [o for o in own if o not in FINAL_OVERRIDES and _key(o) != "method"]
            own.insert(0, f"{system.method} tuned ({tuning['trials']} trials)")
        system.label = " ".join(own) or system.method
        seeds = [run.seed for run in system.runs]
        if len(set(seeds)) < len(seeds):
            raise UserError(
                f"system {system.label!r} has {len(seeds)} runs but seeds {sorted(set(seeds))}: runs that differ only "
                "by seed must each set a different seed (remove the repeated run or report its sweep alone)"
            )
    return list(systems.values())


def pick_baseline(systems: Sequence[System], wanted: str | None) -> System:
    """The system one of whose runs has id, name or method `wanted`, or whose label is `wanted` (default: the first
    system)."""
    if wanted is None:
        return systems[0]
    matches = [
        system
        for system in systems
        if wanted == system.label or any(wanted in (run.run_id, run.name, run.method) for run in system.runs)
    ]
    if len(matches) != 1:
        raise UserError(
            f"--baseline {wanted!r} matches {len(matches)} systems: give a run id, or a unique name, method or label"
        )
    return matches[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retrieval_exp.study", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="add the finished runs of an MLflow experiment or sweep to FOLDER")
    export.add_argument("source", help="MLflow experiment name or sweep id")
    export.add_argument("folder", type=Path)
    add_store_argument(export)
    has = commands.add_parser("has", help="exit 0 if an exported run in FOLDER has all the overrides, else 1")
    has.add_argument("folder", type=Path)
    has.add_argument("overrides", nargs="+", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        if args.command == "has":
            found = matching(read_exported(args.folder), args.overrides) if holds_exported(args.folder) else []
            print(" ".join(run.run_id for run in found))
            return 0 if found else 1
        with tempfile.TemporaryDirectory() as scratch:
            client = MlflowClient(absolute_uri(args.tracking_uri))
            written = export_runs(find_runs(client, args.source, Path(scratch), COSTS, run_files=False), args.folder)
        print(f"{len(written)} runs of {args.source} exported to {args.folder}")
        return 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
