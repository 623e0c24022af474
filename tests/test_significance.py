"""Paired tests of a run against a baseline on hand-built per-query values whose answer is known."""

import math

import numpy as np
import pytest
from scipy import stats

from retrieval_exp.significance import aligned, holm, paired_test, random_effects


def test_identical_runs_are_not_different() -> None:
    values = [0.2, 0.5, 0.9, 0.0]
    result = paired_test(values, values)
    assert (result.t_pvalue, result.wilcoxon_pvalue, result.cohens_d) == (1.0, 1.0, 0.0)
    assert (result.mean_difference, result.ci_low, result.ci_high) == (0.0, 0.0, 0.0)


def test_a_run_better_on_every_query_is_significant() -> None:
    rng = np.random.default_rng(1)
    baseline = rng.uniform(0.2, 0.7, 50)
    system = baseline + rng.uniform(0.01, 0.1, 50)
    result = paired_test(system, baseline)
    assert result.t_pvalue < 1e-6 and result.wilcoxon_pvalue < 1e-6 and result.cohens_d > 1
    assert 0 < result.ci_low < result.mean_difference < result.ci_high
    assert result.t_pvalue == pytest.approx(stats.ttest_rel(system, baseline).pvalue)
    differences = system - baseline
    assert result.cohens_d == pytest.approx(differences.mean() / differences.std(ddof=1))


def test_noise_is_not_significant_and_its_interval_covers_zero() -> None:
    rng = np.random.default_rng(2)
    baseline = rng.uniform(0, 1, 300)
    system = baseline + rng.normal(0, 0.1, 300)
    result = paired_test(system, baseline)
    assert result.t_pvalue > 0.05 and result.ci_low < 0 < result.ci_high


def test_bootstrap_interval_is_seeded_and_matches_the_standard_error() -> None:
    rng = np.random.default_rng(3)
    differences = rng.normal(0.05, 0.2, 400)
    first = paired_test(differences, np.zeros(400), seed=7)
    assert first == paired_test(differences, np.zeros(400), seed=7)
    half_width = 1.96 * differences.std(ddof=1) / math.sqrt(400)
    assert (first.ci_high - first.ci_low) / 2 == pytest.approx(half_width, rel=0.1)


def test_holm_by_hand() -> None:
    # sorted: .005 x 4 = .02, .01 x 3 = .03, .03 x 2 = .06, .04 x 1 = .04 -> kept monotone: .06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0] and holm([]) == []


def test_queries_missing_from_a_run_count_zero() -> None:
    system, baseline = aligned({"q1": 1.0, "q2": 0.5}, {"q2": 0.25, "q3": 1.0})
    assert system.tolist() == [1.0, 0.5, 0.0] and baseline.tolist() == [0.0, 0.25, 1.0]


def test_random_effects_by_hand() -> None:
    # w = 1/v = 100, 50, 66.67; fixed = 0.1; Q = 50 * 0.2^2 + 66.67 * 0.15^2 = 3.5 on 2 df;
    # scale = 216.67 - 16944.4 / 216.67 = 138.46; tau2 = 1.5 / 138.46; I2 = 1.5 / 3.5
    pooled = random_effects([0.1, 0.3, -0.05], [0.01, 0.02, 0.015])
    tau2 = 1.5 / (650 / 3 - (100**2 + 50**2 + (200 / 3) ** 2) / (650 / 3))
    assert pooled.tau2 == pytest.approx(tau2) and pooled.i2 == pytest.approx(3 / 7)
    weights = 1 / (np.array([0.01, 0.02, 0.015]) + tau2)
    assert pooled.estimate == pytest.approx((weights * [0.1, 0.3, -0.05]).sum() / weights.sum())
    assert pooled.standard_error == pytest.approx(weights.sum() ** -0.5)
    assert pooled.ci_low == pytest.approx(pooled.estimate - 1.959964 * pooled.standard_error)
    assert pooled.pvalue == pytest.approx(2 * stats.norm.sf(pooled.estimate / pooled.standard_error))


def test_random_effects_of_agreeing_collections_is_the_fixed_effect() -> None:
    pooled = random_effects([0.05, 0.05, 0.05], [0.001, 0.004, 0.002])
    assert pooled.tau2 == 0 and pooled.i2 == 0 and pooled.estimate == pytest.approx(0.05)
    assert pooled.standard_error == pytest.approx((1000 + 250 + 500) ** -0.5)
    single = random_effects([0.02], [0.0004])
    assert (single.estimate, single.standard_error, single.tau2) == (0.02, pytest.approx(0.02), 0.0)
    assert random_effects([0.0, 0.0], [0.0, 0.0]).pvalue == 1.0


def test_paired_test_gives_the_standard_error_of_the_mean_difference() -> None:
    differences = np.array([0.1, 0.3, -0.1, 0.2])
    result = paired_test(differences, np.zeros(4), resamples=0)
    assert result.standard_error == pytest.approx(differences.std(ddof=1) / 2)
