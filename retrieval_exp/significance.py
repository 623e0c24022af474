"""Paired significance of one run against a baseline over the same queries, as IR papers report it: paired t-test,
Wilcoxon signed-rank, Cohen's d of the differences, a bootstrap confidence interval of the mean difference, and Holm's
correction across the comparisons of one table."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

BOOTSTRAP_CHUNK = 1000  # resamples drawn at once, so memory stays bounded for large query sets


@dataclass(frozen=True)
class PairedTest:
    """`system` against `baseline`: mean difference (system - baseline) and its tests."""

    queries: int
    mean_difference: float
    t_statistic: float
    t_pvalue: float
    wilcoxon_statistic: float
    wilcoxon_pvalue: float
    cohens_d: float  # mean difference / std of the differences
    ci_low: float  # percentile bootstrap interval of the mean difference (nan without resamples)
    ci_high: float
    standard_error: float = 0.0  # of the mean difference: std of the differences / sqrt(queries)


def aligned(system: Mapping[str, float], baseline: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Per-query values of both runs over the union of their queries; a query one run lacks counts 0 there, as
    trec_eval -c counts it."""
    queries = sorted(system.keys() | baseline.keys())
    return np.array([system.get(q, 0.0) for q in queries]), np.array([baseline.get(q, 0.0) for q in queries])


def paired_test(
    system: Sequence[float] | np.ndarray,
    baseline: Sequence[float] | np.ndarray,
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
    ddof: int = 1,
) -> PairedTest:
    """Tests of the paired values; identical values give p = 1, d = 0 and an interval of [0, 0]."""
    system, baseline = np.asarray(system, dtype=float), np.asarray(baseline, dtype=float)
    differences = system - baseline
    if not differences.any():
        return PairedTest(len(differences), 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0)
    t_test = stats.ttest_rel(system, baseline)
    wilcoxon = stats.wilcoxon(system, baseline)
    mean, spread = float(differences.mean()), float(differences.std(ddof=ddof))
    low, high = bootstrap_interval(differences, resamples, confidence, seed) if resamples else (math.nan, math.nan)
    return PairedTest(
        len(differences),
        mean,
        float(t_test.statistic),
        float(t_test.pvalue),
        float(wilcoxon.statistic),
        float(wilcoxon.pvalue),
        mean / spread if spread else math.copysign(math.inf, mean),
        low,
        high,
        spread / math.sqrt(len(differences)),
    )


def bootstrap_interval(
    values: np.ndarray, resamples: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (per-query values or their differences)."""
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = np.concatenate(
        [
            values[rng.integers(0, len(values), (min(BOOTSTRAP_CHUNK, resamples - start), len(values)))].mean(axis=1)
            for start in range(0, resamples, BOOTSTRAP_CHUNK)
        ]
    )
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def geometric_mean(values: Sequence[float]) -> float:
    """The geometric mean, as TIREx averages across collections; zero when any value is zero."""
    return 0.0 if min(values) <= 0 else math.exp(sum(map(math.log, values)) / len(values))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the given order: the i-th smallest p is multiplied by (m - i + 1),
    kept monotone and capped at 1."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted = [0.0] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class PooledEffect:
    """A difference pooled across collections by a random-effects model (DerSimonian and Laird, 1986): each
    collection's mean difference weighted by 1 / (its variance + tau2), tau2 the between-collection variance."""

    collections: int
    estimate: float
    standard_error: float
    ci_low: float
    ci_high: float
    pvalue: float  # two-sided z-test of estimate = 0
    tau2: float
    i2: float  # share of the spread across collections beyond chance, in [0, 1]


def random_effects(differences: Sequence[float], variances: Sequence[float], confidence: float = 0.95) -> PooledEffect:
    """Pool per-collection mean differences whose sampling variances are `variances` (var of the per-query
    differences / queries). Pairing stays within each collection; only the collection means are combined, so
    collections of different query sets and sizes are never mixed query by query."""
    d, v = np.asarray(differences, dtype=float), np.asarray(variances, dtype=float)
    if not d.any() and not v.any():
        return PooledEffect(len(d), 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0)
    v = np.where(v > 0, v, v[v > 0].min() if (v > 0).any() else 1e-12)  # an exactly known difference: tiny variance
    w = 1 / v
    fixed = float((w * d).sum() / w.sum())
    q = float((w * (d - fixed) ** 2).sum())
    df = len(d) - 1
    scale = float(w.sum() - (w**2).sum() / w.sum())
    tau2 = max(0.0, (q - df) / scale) if df > 0 and scale > 0 else 0.0
    w_star = 1 / (v + tau2)
    estimate = float((w_star * d).sum() / w_star.sum())
    se = float(math.sqrt(1 / w_star.sum()))
    z = stats.norm.ppf(1 - (1 - confidence) / 2)
    pvalue = float(2 * stats.norm.sf(abs(estimate) / se)) if se else 0.0
    i2 = max(0.0, (q - df) / q) if q > 0 else 0.0
    low, high = float(estimate - z * se), float(estimate + z * se)
    return PooledEffect(len(d), estimate, se, low, high, pvalue, tau2, i2)
