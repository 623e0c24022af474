"""The report's figures: a systems x collections heat-map of the difference to the baseline with significance marks,
each collection's per-system means with bootstrap intervals, and the training-loss curves. Every label is what sets a
system apart (study.System.label), wrapped rather than cut, so that different systems never read the same."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from retrieval_exp.significance import bootstrap_interval  # noqa: E402
from retrieval_exp.study import System  # noqa: E402
from retrieval_exp.tracking.mlflow_run import metric_key  # noqa: E402

WRAP = 48  # label characters per line


def label(number: int, system: System) -> str:
    return textwrap.fill(f"{number}: {system.label}", WRAP, subsequent_indent="   ")


def plot_heatmap(
    systems: Sequence[System],
    baseline: System,
    collections: Sequence[str],
    measure: str,
    comparisons: Mapping[tuple[int, str], Any],
    alpha: float,
    out: Path,
) -> None:
    """heatmap_<measure>.png: Δ of every system against the baseline per collection; † = Holm-adjusted p < alpha;
    blank where a system was not evaluated on a collection."""
    rows = [n for n, system in enumerate(systems) if system is not baseline]
    if not rows:
        return
    deltas = np.full((len(rows), len(collections)), np.nan)
    for i, number in enumerate(rows):
        for j, collection in enumerate(collections):
            found = comparisons.get((number, collection))
            if found is not None:
                deltas[i, j] = found.test.mean_difference
    limit = float(np.nanmax(np.abs(deltas))) if np.isfinite(deltas).any() else 1.0
    labels = [label(n, systems[n]) for n in rows]
    height = 1.2 + sum(0.28 * (text.count("\n") + 1) + 0.12 for text in labels)
    figure, axes = plt.subplots(figsize=(1.1 * len(collections) + 5, height))
    image = axes.imshow(deltas, cmap="RdBu", vmin=-limit or -1, vmax=limit or 1, aspect="auto")
    for i, number in enumerate(rows):
        for j, collection in enumerate(collections):
            found = comparisons.get((number, collection))
            if found is not None:
                mark = "†" if found.holm_p < alpha else ""
                axes.text(j, i, f"{found.test.mean_difference:+.3f}{mark}", ha="center", va="center", fontsize=8)
    axes.set_xticks(range(len(collections)), collections, rotation=30, ha="right")
    axes.set_yticks(range(len(rows)), labels, fontsize=8)
    axes.set_title(f"Δ {measure} against {label(systems.index(baseline), baseline)}  († Holm p < {alpha})", fontsize=9)
    figure.colorbar(image, ax=axes, label=f"Δ {measure}")
    figure.tight_layout()
    figure.savefig(out / f"heatmap_{metric_key(measure)}.png", dpi=120)
    plt.close(figure)


def plot_intervals(systems: Sequence[System], collections: Sequence[str], measure: str, path: Path) -> None:
    """One panel per collection: each system's mean over queries (values averaged over seeds) with its 95%
    bootstrap interval."""
    labels = [label(n, system) for n, system in enumerate(systems)]
    height = 1.4 + sum(0.28 * (text.count("\n") + 1) + 0.1 for text in labels)
    columns = min(4, len(collections))
    grid_rows = -(-len(collections) // columns)
    figure, panels = plt.subplots(
        grid_rows, columns, figsize=(3.2 * columns + 3.5, height * grid_rows), squeeze=False, sharey=True
    )
    for panel, collection in zip(panels.flat, collections):
        for number, system in enumerate(systems):
            if collection not in system.collections:
                continue
            values = np.array(list(system.per_query_mean(collection, measure).values()))
            low, high = bootstrap_interval(values)
            spread = [[values.mean() - low], [high - values.mean()]]
            panel.errorbar(values.mean(), number, xerr=spread, fmt="o", color=f"C{number % 10}")
        panel.set_title(collection, fontsize=9)
        panel.set_xlabel(measure, fontsize=8)
    for panel in panels.flat[len(collections) :]:
        panel.set_visible(False)
    for row in panels:
        row[0].set_yticks(range(len(systems)), labels, fontsize=8)
    panels[0][0].invert_yaxis()
    figure.suptitle(f"{measure}: mean over queries with 95% bootstrap interval", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_loss(systems: Sequence[System], path: Path) -> None:
    """The training loss curves logged to MLflow, one line per run (no plot when no run trained)."""
    curves = [(n, system, run) for n, system in enumerate(systems) for run in system.runs if run.loss_curve]
    if not curves:
        return
    figure, axes = plt.subplots(figsize=(10, 4.5))
    for number, system, run in curves:
        steps, values = zip(*run.loss_curve)
        seed = f" (seed {run.seed})" if len(system.runs) > 1 else ""
        axes.plot(steps, values, label=label(number, system) + seed)
    axes.set_xlabel("step")
    axes.set_ylabel("train/loss")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
