"""A study's table from its MLflow runs: one row per finished run, per-query paired tests against a baseline with
Holm's correction across the table, plots, and the TREC run files gathered beside it.

    python -m retrieval_exp.report SOURCE [--baseline RUN] [--out results/<study>] [--to-parent]

SOURCE is an MLflow experiment name or a sweep id (the `sweep_id` tag); RUN a run id, run name or `method` tag.
A dagger (†) marks a run whose per-query difference to the baseline is significant (paired t-test, Holm-adjusted
p < 0.05, across the table's runs).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from mlflow.entities import Run as MlflowRun  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from retrieval_exp.errors import UserError  # noqa: E402
from retrieval_exp.significance import PairedTest, aligned, bootstrap_interval, holm, paired_test  # noqa: E402
from retrieval_exp.tracking.mlflow_run import absolute_uri, metric_key  # noqa: E402

ALPHA = 0.05
COSTS = {"train s": "time/train_s", "steps": "train/steps", "peak MB": "memory/peak_rss_mb"}


@dataclass
class StudyRun:
    run_id: str
    name: str
    method: str
    overrides: list[str]
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]  # measure -> query -> value
    run_file: Path
    loss_curve: list[tuple[int, float]]
    parent_run_id: str | None
    swept: str = ""


def find_runs(client: MlflowClient, source: str, folder: Path) -> list[StudyRun]:
    """Finished, non-parent runs of experiment `source`, or of the sweep whose id is `source`."""
    experiment = client.get_experiment_by_name(source)
    if experiment is not None:
        found = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    else:
        ids = [e.experiment_id for e in client.search_experiments()]
        found = client.search_runs(ids, f"tags.sweep_id = '{source}'", order_by=["attributes.start_time ASC"])
    finished = [r for r in found if r.info.status == "FINISHED" and "sweep_parent" not in r.data.tags]
    runs = [_load(client, record, folder) for record in finished]
    if not runs:
        raise UserError(f"no finished runs in experiment or sweep {source!r}: check the name and --tracking-uri")
    shared = set.intersection(*(set(run.overrides) for run in runs))
    for run in runs:
        run.swept = " ".join(o for o in run.overrides if o not in shared)
    return runs


def _load(client: MlflowClient, record: MlflowRun, folder: Path) -> StudyRun:
    run_id = record.info.run_id
    target = folder / run_id
    target.mkdir(parents=True)
    per_query: dict[str, dict[str, float]] = {}
    table = Path(client.download_artifacts(run_id, "perquery.tsv", str(target)))
    for line in table.read_text().splitlines()[1:]:
        query_id, measure, value = line.split("\t")
        per_query.setdefault(measure, {})[query_id] = float(value)
    tags = record.data.tags
    return StudyRun(
        run_id,
        record.info.run_name,
        tags.get("method", ""),
        tags.get("overrides", "").split(),
        dict(record.data.metrics),
        per_query,
        Path(client.download_artifacts(run_id, "run.trec", str(target))),
        sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train/loss")),
        tags.get("mlflow.parentRunId"),
    )


def pick_baseline(runs: Sequence[StudyRun], wanted: str | None) -> StudyRun:
    """The run named by id, name or method tag (the first run when none is named)."""
    if wanted is None:
        return runs[0]
    matches = [run for run in runs if wanted in (run.run_id, run.name, run.method)]
    if len(matches) != 1:
        raise UserError(f"--baseline {wanted!r} matches {len(matches)} runs: give a run id, or a unique name or method")
    return matches[0]


def compare(runs: Sequence[StudyRun], baseline: StudyRun, measures: Sequence[str]) -> dict[str, dict[str, PairedTest]]:
    """measure -> run id -> test against the baseline (the baseline itself excluded)."""
    return {
        measure: {
            run.run_id: paired_test(*aligned(run.per_query[measure], baseline.per_query[measure]))
            for run in runs
            if run is not baseline
        }
        for measure in measures
    }


def write_report(runs: list[StudyRun], baseline: StudyRun, measures: Sequence[str], out: Path) -> None:
    """report.md, report.csv, runs/<n>.trec, and plots of the first measure and the training loss."""
    tests = compare(runs, baseline, measures)
    adjusted = {m: dict(zip(tests[m], holm([t.t_pvalue for t in tests[m].values()]))) for m in measures}
    out.mkdir(parents=True, exist_ok=True)
    (out / "runs").mkdir(exist_ok=True)
    primary = measures[0]
    header = ["#", "run", "swept", *measures, f"Δ {primary} [95% CI]", "d", "p t (Holm)", "p Wilcoxon", *COSTS]
    rows, records = [], []
    for number, run in enumerate(runs):
        shutil.copy(run.run_file, out / "runs" / f"{number}.trec")
        cells = [str(number), run.method, run.swept or "–"]
        for measure in measures:
            value = f"{run.metrics[metric_key(measure)]:.4f}"
            test = tests[measure].get(run.run_id)
            cells.append(value + ("†" if test and adjusted[measure][run.run_id] < ALPHA else ""))
        test = tests[primary].get(run.run_id)
        if test is None:
            cells += ["baseline", "", "", ""]
        else:
            cells += [
                f"{test.mean_difference:+.4f} [{test.ci_low:+.4f}, {test.ci_high:+.4f}]",
                f"{test.cohens_d:.2f}",
                f"{adjusted[primary][run.run_id]:.3g}",
                f"{test.wilcoxon_pvalue:.3g}",
            ]
        cells += [f"{run.metrics[key]:.0f}" if key in run.metrics else "–" for key in COSTS.values()]
        rows.append(cells)
        records.append(_record(number, run, measures, tests, adjusted))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
    note = (
        f"Baseline: run {runs.index(baseline)} ({baseline.run_id}). † = paired t-test against it, Holm-adjusted "
        f"p < {ALPHA} across the {len(runs) - 1} other runs. Run files: runs/<#>.trec."
    )
    (out / "report.md").write_text("\n".join(lines) + "\n\n" + note + "\n")
    with (out / "report.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    _plot_measure(runs, primary, out / f"{metric_key(primary)}.png")
    _plot_loss(runs, out / "train_loss.png")


def _record(number: int, run: StudyRun, measures: Sequence[str], tests: dict, adjusted: dict) -> dict[str, object]:
    record: dict[str, object] = {"#": number, "run_id": run.run_id, "name": run.name, "swept": run.swept}
    for measure in measures:
        test = tests[measure].get(run.run_id)
        record[measure] = run.metrics[metric_key(measure)]
        record[f"{measure} diff"] = test.mean_difference if test else ""
        record[f"{measure} ci_low"] = test.ci_low if test else ""
        record[f"{measure} ci_high"] = test.ci_high if test else ""
        record[f"{measure} d"] = test.cohens_d if test else ""
        record[f"{measure} p_t"] = test.t_pvalue if test else ""
        record[f"{measure} p_t_holm"] = adjusted[measure][run.run_id] if test else ""
        record[f"{measure} p_wilcoxon"] = test.wilcoxon_pvalue if test else ""
    return record | {label: run.metrics.get(key, "") for label, key in COSTS.items()}


def _plot_measure(runs: Sequence[StudyRun], measure: str, path: Path) -> None:
    """Each run's mean with a 95% bootstrap interval over queries."""
    means, errors = [], []
    for run in runs:
        values = np.array(list(run.per_query[measure].values()))
        low, high = bootstrap_interval(values)
        means.append(values.mean())
        errors.append([values.mean() - low, high - values.mean()])
    figure, axes = plt.subplots(figsize=(10, 0.45 * len(runs) + 1.4))
    axes.errorbar(means, range(len(runs)), xerr=np.array(errors).T, fmt="o", capsize=3)
    axes.set_yticks(range(len(runs)), [f"{i}: {run.swept or run.method}"[:60] for i, run in enumerate(runs)])
    axes.invert_yaxis()
    axes.set_xlabel(f"{measure} (mean over queries, 95% bootstrap CI)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _plot_loss(runs: Sequence[StudyRun], path: Path) -> None:
    """The training loss curves logged to MLflow (no plot when no run trained)."""
    trained = [(number, run) for number, run in enumerate(runs) if run.loss_curve]
    if not trained:
        return
    figure, axes = plt.subplots(figsize=(10, 4.5))
    for number, run in trained:
        steps, values = zip(*run.loss_curve)
        axes.plot(steps, values, label=f"{number}: {run.swept or run.method}"[:60])
    axes.set_xlabel("step")
    axes.set_ylabel("train/loss")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m retrieval_exp.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="MLflow experiment name or sweep id")
    parser.add_argument("--baseline", help="run id, run name or method tag (default: the first run)")
    parser.add_argument("--out", type=Path, help="output folder (default: results/reports/<source>)")
    parser.add_argument("--measures", nargs="+", default=["nDCG@10", "R@100", "RR@10"])
    parser.add_argument("--tracking-uri", default="sqlite:///results/mlflow.db")
    parser.add_argument("--to-parent", action="store_true", help="also log the report to the sweep's parent run")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Path:
    args = _arguments(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = MlflowClient(absolute_uri(args.tracking_uri))
    out = args.out or Path("results") / "reports" / args.source
    try:
        with tempfile.TemporaryDirectory() as scratch:
            runs = find_runs(client, args.source, Path(scratch))
            missing = [m for m in args.measures for run in runs if m not in run.per_query]
            if missing:
                raise UserError(f"measure {missing[0]!r} is not in every run's perquery.tsv: pick from eval.measures")
            write_report(runs, pick_baseline(runs, args.baseline), args.measures, out)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    parent = runs[0].parent_run_id
    if args.to_parent and parent:
        client.log_artifacts(parent, str(out), "report")
    print((out / "report.md").read_text())
    return out


if __name__ == "__main__":
    main()
