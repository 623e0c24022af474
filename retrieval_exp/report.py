"""A study's tables from its MLflow runs: systems (runs that differ only by seed) against a baseline on every test
collection, paired within each collection, pooled across collections, Holm-corrected across systems x collections.

    python -m retrieval_exp.report SOURCE [--baseline RUN] [--out results/<study>] [--to-parent]

SOURCE is an MLflow experiment name, a sweep id (the `sweep_id` tag), or a folder of runs exported by
`python -m retrieval_exp.study export` (the same report, without the run files); RUN a run id, run name, `method` tag
or system label. Per collection, each system's per-query values are averaged over its seeds and paired with the
baseline's on the same queries (paired t-test, Wilcoxon, Cohen's d, bootstrap interval); the seed standard deviation
stands beside each difference. A dagger (†) marks a Holm-adjusted p < 0.05, the correction taken over every (system,
collection) test of the measure. Across collections the per-collection differences are pooled by a random-effects
model with its interval.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

from retrieval_exp.errors import UserError
from retrieval_exp.report_plots import plot_heatmap, plot_intervals, plot_loss
from retrieval_exp.significance import (
    PairedTest,
    PooledEffect,
    aligned,
    geometric_mean,
    holm,
    paired_test,
    random_effects,
)
from retrieval_exp.study import COSTS, System, find_runs, group, holds_exported, pick_baseline, read_exported
from retrieval_exp.tracking.mlflow_run import absolute_uri, add_store_argument, metric_key

ALPHA = 0.05


@dataclass(frozen=True)
class Comparison:
    """One system against the baseline on one collection and measure."""

    test: PairedTest
    seed_sd: float  # of the difference: the two systems' seed standard deviations combined
    holm_p: float = math.nan


def study_collections(systems: Sequence[System]) -> list[str]:
    """Every collection some system was evaluated on, in order of first appearance."""
    return list(dict.fromkeys(c for system in systems for c in system.collections))


def compare(
    systems: Sequence[System], baseline: System, measure: str
) -> tuple[dict[tuple[int, str], Comparison], dict[int, PooledEffect]]:
    """(system #, collection) -> comparison with the baseline (Holm over all of them), and system # -> the pooled
    effect over the collections both share."""
    raw: dict[tuple[int, str], Comparison] = {}
    for number, system in enumerate(systems):
        if system is baseline:
            continue
        for collection in [c for c in system.collections if c in baseline.collections]:
            pairs = aligned(system.per_query_mean(collection, measure), baseline.per_query_mean(collection, measure))
            spread = math.hypot(system.seed_sd(collection, measure), baseline.seed_sd(collection, measure))
            raw[number, collection] = Comparison(paired_test(*pairs), spread)
    adjusted = holm([comparison.test.t_pvalue for comparison in raw.values()])
    comparisons = {key: Comparison(c.test, c.seed_sd, p) for (key, c), p in zip(raw.items(), adjusted)}
    pooled = {}
    for number in {n for n, _ in comparisons}:
        tests = [c.test for (n, _), c in comparisons.items() if n == number]
        pooled[number] = random_effects([t.mean_difference for t in tests], [t.standard_error**2 for t in tests])
    return comparisons, pooled


def _cell(system: System, collection: str, measure: str, significant: bool) -> str:
    if collection not in system.collections:
        return "–"
    text = f"{system.mean(collection, measure):.4f}"
    if len(system.runs) > 1:
        text += f" ±{system.seed_sd(collection, measure):.4f}"
    return text + ("†" if significant else "")


def _means(system: System, collections: Sequence[str], measure: str) -> tuple[str, str]:
    """Arithmetic and geometric mean over the study's collections (only for a system evaluated on all of them)."""
    if any(c not in system.collections for c in collections):
        return "–", "–"
    values = [system.mean(c, measure) for c in collections]
    return f"{sum(values) / len(values):.4f}", f"{geometric_mean(values):.4f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def measure_section(
    systems: Sequence[System], baseline: System, measure: str, comparisons: dict, pooled: dict
) -> list[str]:
    """The main table of one measure: systems x collections, their means, the pooled difference and costs."""
    collections = study_collections(systems)
    header = ["#", "system", "seeds", *collections, "mean", "gmean", "pooled Δ [95% CI]", *COSTS]
    rows = []
    for number, system in enumerate(systems):
        cells = [str(number), system.label, str(len(system.runs))]
        for collection in collections:
            found = comparisons.get((number, collection))
            cells.append(_cell(system, collection, measure, found is not None and found.holm_p < ALPHA))
        cells += _means(system, collections, measure)
        effect = pooled.get(number)
        cells.append(
            "baseline"
            if system is baseline
            else f"{effect.estimate:+.4f} [{effect.ci_low:+.4f}, {effect.ci_high:+.4f}]"
            if effect
            else "–"
        )
        for label in COSTS:
            spent = [run.costs[label] for run in system.runs if label in run.costs]
            cells.append(f"{sum(spent) / len(spent):.0f}" if spent else "–")
        rows.append(cells)
    title = f"## {measure}: mean over seeds (± their sd); † Holm-adjusted p < {ALPHA} against the baseline"
    return [title, "", *_table(header, rows), ""]


def difference_section(systems: Sequence[System], measure: str, comparisons: dict, pooled: dict) -> list[str]:
    """Each (system, collection) difference with its tests, then each system's pooled effect."""
    header = ["#", "collection", "queries", "Δ [95% CI]", "seed sd", "d", "p t", "p t (Holm)", "p Wilcoxon"]
    rows = []
    for (number, collection), c in comparisons.items():
        t = c.test
        rows.append(
            [str(number), collection, str(t.queries), f"{t.mean_difference:+.4f} [{t.ci_low:+.4f}, {t.ci_high:+.4f}]"]
            + [
                f"{c.seed_sd:.4f}",
                f"{t.cohens_d:.2f}",
                f"{t.t_pvalue:.3g}",
                f"{c.holm_p:.3g}",
                f"{t.wilcoxon_pvalue:.3g}",
            ]
        )
    pooled_header = ["#", "system", "collections", "pooled Δ [95% CI]", "p", "τ²", "I²"]
    pooled_rows = [
        [str(n), systems[n].label, str(e.collections), f"{e.estimate:+.4f} [{e.ci_low:+.4f}, {e.ci_high:+.4f}]"]
        + [f"{e.pvalue:.3g}", f"{e.tau2:.2g}", f"{e.i2:.0%}"]
        for n, e in sorted(pooled.items())
    ]
    return [
        f"## {measure}: differences to the baseline, per collection",
        "",
        *_table(header, rows),
        "",
        f"## {measure}: pooled across collections (random effects, DerSimonian-Laird)",
        "",
        *_table(pooled_header, pooled_rows),
        "",
    ]


def seeds_section(systems: Sequence[System], measure: str) -> list[str]:
    """Every run's own value, for systems with more than one seed."""
    collections = study_collections(systems)
    rows = [
        [str(number), system.label, run.seed]
        + [f"{run.collections[c].metrics[measure]:.4f}" if c in run.collections else "–" for c in collections]
        for number, system in enumerate(systems)
        if len(system.runs) > 1
        for run in system.runs
    ]
    return [f"## {measure}: per seed", "", *_table(["#", "system", "seed", *collections], rows), ""] if rows else []


def tuning_section(systems: Sequence[System]) -> list[str]:
    """For each tuned system's runs: the search that chose its values, on validation."""
    rows = []
    for number, system in enumerate(systems):
        for run in system.runs:
            if run.tuning:
                chosen = ", ".join(f"{k}={v:.3g}" for k, v in json.loads(run.tuning["best_params"]).items())
                trials = f"{run.tuning['trials']} ({run.tuning.get('pruned', '0')} pruned)"
                value = f"{run.tuning['objective']} {float(run.tuning['best_value']):.4f}"
                rows.append([str(number), system.label, run.seed, trials, value, chosen, run.tuning["best_run"]])
    if not rows:
        return []
    header = ["#", "system", "seed", "trials", "best validation", "chosen values", "best trial's run"]
    note = "Chosen on validation by an Optuna search (hparams_search); its best trial's model evaluated on test once."
    return ["## Tuned systems", "", note, "", *_table(header, rows), ""]


def write_report(systems: list[System], baseline: System, measures: Sequence[str], out: Path) -> None:
    """report.md, report.csv, runs/<system>-<seed>-<collection>.trec, a heat-map, interval plots and loss curves."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "runs").mkdir(exist_ok=True)
    primary = measures[0]
    results = {measure: compare(systems, baseline, measure) for measure in measures}
    lines = [f"Baseline: system {systems.index(baseline)} ({baseline.label}).", ""]
    for measure in measures:
        lines += measure_section(systems, baseline, measure, *results[measure])
    lines += difference_section(systems, primary, *results[primary])
    lines += seeds_section(systems, primary)
    lines += tuning_section(systems)
    lines.append(
        "Per collection, each system's per-query values are averaged over its seeds and paired with the baseline's on "
        "the same queries; collections are never mixed query by query. Run files (of a study read from MLflow): "
        "runs/<#>-<seed>-<collection>.trec."
    )
    (out / "report.md").write_text("\n".join(lines) + "\n")
    _write_csv(systems, baseline, measures, results, out / "report.csv")
    for number, system in enumerate(systems):
        for run in system.runs:
            for name, result in run.collections.items():
                if result.run_file is not None:
                    shutil.copy(result.run_file, out / "runs" / f"{number}-{run.seed}-{name.replace('/', '_')}.trec")
    plot_heatmap(systems, baseline, study_collections(systems), primary, results[primary][0], ALPHA, out)
    plot_intervals(systems, study_collections(systems), primary, out / f"{metric_key(primary)}.png")
    plot_loss(systems, out / "train_loss.png")


def _write_csv(systems: list[System], baseline: System, measures: Sequence[str], results: dict, path: Path) -> None:
    """One row per (system, collection), and one `pooled` row per system, with every measure's figures."""
    records = []
    for number, system in enumerate(systems):
        for collection in [*system.collections, "pooled"]:
            record: dict[str, object] = {"#": number, "system": system.label, "collection": collection}
            record |= {"seeds": len(system.runs), "run_ids": " ".join(run.run_id for run in system.runs)}
            for measure in measures:
                comparisons, pooled = results[measure]
                record |= _figures(system, collection, measure, comparisons.get((number, collection)), pooled, number)
            if collection != "pooled" or system is not baseline:
                records.append(record)
    fields = list(dict.fromkeys(key for record in records for key in record))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(records)


def _figures(
    system: System, collection: str, measure: str, found: Comparison | None, pooled: dict, number: int
) -> dict[str, object]:
    if collection == "pooled":
        effect = pooled.get(number)
        if effect is None:
            return {}
        return {
            f"{measure} diff": effect.estimate,
            f"{measure} ci_low": effect.ci_low,
            f"{measure} ci_high": effect.ci_high,
        }
    figures: dict[str, object] = {
        measure: system.mean(collection, measure),
        f"{measure} seed_sd": system.seed_sd(collection, measure),
    }
    if found is not None:
        t = found.test
        figures |= {
            f"{measure} diff": t.mean_difference,
            f"{measure} ci_low": t.ci_low,
            f"{measure} ci_high": t.ci_high,
        }
        figures |= {f"{measure} diff_seed_sd": found.seed_sd, f"{measure} d": t.cohens_d, f"{measure} p_t": t.t_pvalue}
        figures |= {f"{measure} p_t_holm": found.holm_p, f"{measure} p_wilcoxon": t.wilcoxon_pvalue}
    return figures


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m retrieval_exp.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="MLflow experiment name, sweep id, or a folder of exported runs")
    parser.add_argument("--baseline", help="run id, run name, method tag or system label (default: the first system)")
    parser.add_argument("--out", type=Path, help="output folder (default: results/reports/<source>)")
    parser.add_argument("--measures", nargs="+", default=["nDCG@10", "R@100", "RR@10"])
    add_store_argument(parser)
    parser.add_argument("--to-parent", action="store_true", help="also log the report to the sweep's parent run")
    parser.add_argument("--across", nargs="+", default=["seed"], metavar="KEY",
                        help="override keys that vary within one system (default: seed; e.g. seed init)")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Path:
    args = _arguments(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = MlflowClient(absolute_uri(args.tracking_uri))
    out = args.out or Path("results") / "reports" / Path(args.source).name
    try:
        with tempfile.TemporaryDirectory() as scratch:
            exported = holds_exported(Path(args.source))
            if exported and args.to_parent:
                raise UserError("--to-parent needs an MLflow experiment or sweep as SOURCE, not a folder")
            runs = (
                read_exported(Path(args.source)) if exported else find_runs(client, args.source, Path(scratch), COSTS)
            )
            for measure in args.measures:
                for run in runs:
                    if any(measure not in result.per_query for result in run.collections.values()):
                        raise UserError(
                            f"measure {measure!r} is not in every run's perquery.tsv: pick from eval.measures"
                        )
            systems = group(runs, args.across)
            write_report(systems, pick_baseline(systems, args.baseline), args.measures, out)
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
