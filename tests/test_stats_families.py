"""Families: Holm over the primary metrics × languages × arms, BH over the rest; degenerate
proportions get an exact test; the heavy-user correction's leverage factor."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.analysis.analyze import analyze_data
from experiments.analysis.metrics_sql import ExperimentData
from experiments.analysis.moments_sql import MetricStats
from experiments.analysis.stats import ResultCode, adjust_p_values, compare
from experiments.analysis.stats.estimates import leverage_factor
from experiments.analysis.stats.moments import MeanMoments, RatioMoments
from simulator.heavy_tails import SIMULATED_METRICS, moments, user_values
from tests.experiment_definitions import config

LANGUAGES = ("go", "java", "python")
CONFIG = config(primary_metrics=["acceptance_rate", "cpr_30"], guardrails=[])


def _data(lift: float) -> ExperimentData:
    """Per language 600 heavy-tailed users per arm; the treatment lifts python's acceptance."""
    rng = np.random.default_rng(3)
    stats: list[MetricStats] = []
    totals: dict[tuple[str, str], RatioMoments | MeanMoments] = {}
    for language in LANGUAGES:
        for arm in ("control", "lora"):
            effect = lift if (arm, language) == ("lora", "python") else 0.0
            values = user_values(rng, 600, acceptance_lift=effect)
            active = values["suggestions_per_user"][0] > 0
            for metric in SIMULATED_METRICS:
                m, d = values[metric]
                found = moments((m, d), active if d is None else None)
                stats.append(MetricStats(metric, arm, language, found))
                key = (metric, arm)
                totals[key] = found if key not in totals else totals[key] + found  # type: ignore[operator]
    stats += [MetricStats(metric, arm, None, m) for (metric, arm), m in totals.items()]
    users = {"control": 1800, "lora": 1800}
    return ExperimentData("exp-a", users, None, None, stats, [], "raw")


def test_holm_runs_over_the_primary_metrics_by_language_and_bh_over_the_rest() -> None:
    report = analyze_data(_data(0.3), CONFIG, status="running", coverage=1.0, by_language=True)
    for family, method in (("primary", "holm"), ("secondary", "bh")):
        rows = [r for r in report.results if r.language is not None and r.family == family]
        assert {r.metric in CONFIG.primary_metrics for r in rows} == {family == "primary"}
        tested = [r for r in rows if r.adjusted is not None and r.adjusted.p_adjusted is not None]
        expected = adjust_p_values([r.comparison.p_rel for r in tested], method)  # type: ignore[misc]
        assert [r.adjusted.p_adjusted for r in tested] == pytest.approx(expected)  # type: ignore[union-attr]
        assert all(r.adjusted.method.value == method for r in tested)  # type: ignore[union-attr]
    # The primary family is 2 metrics × 3 languages: python's lift survives it.
    python = report.result("acceptance_rate", "lora", "python")
    assert python.adjusted is not None and python.adjusted.significant
    assert python.adjusted.ci is not None and python.adjusted.ci[0] > 0


def test_the_interval_shown_agrees_with_the_marker() -> None:
    report = analyze_data(_data(0.3), CONFIG, status="running", coverage=1.0, by_language=True)
    for row in report.results:
        if row.adjusted is None or row.adjusted.ci is None:
            continue
        low, high = row.adjusted.ci
        assert row.adjusted.significant == (low > 0 or high < 0), (row.metric, row.language)


def test_a_constant_proportion_arm_gets_fishers_exact_test() -> None:
    # 0 of 10 against 2 of 10: the t-test would claim p 0.007 (control's variance is 0).
    result = compare(MeanMoments(10, 0.0, 0.0), MeanMoments(10, 2.0, 2.0), proportion=True)
    assert result.code is ResultCode.EXACT_TEST
    assert result.p_abs == pytest.approx(0.4736842105263158)
    assert result.ci_abs is None and result.p_rel is None  # no baseline for a relative lift
    both = compare(MeanMoments(20, 20.0, 20.0), MeanMoments(20, 12.0, 12.0), proportion=True)
    assert both.code is ResultCode.EXACT_TEST and both.p_rel == both.p_abs


def test_the_leverage_factor_is_hc3_to_first_order() -> None:
    rng = np.random.default_rng(1)
    d = rng.gamma(0.5, 30.0, size=50) + 1.0
    m = rng.binomial(d.astype(np.int64), 0.4).astype(np.float64)
    ratio = m.sum() / d.sum()
    residuals = m - ratio * d
    leverage = d / d.sum()
    expected = (residuals**2 * (1 + 2 * leverage)).sum() / (residuals**2).sum()
    assert leverage_factor(moments((m, d))) == pytest.approx(expected)
    # Equal weights: 1 + 2/n; without third-order sums there is no factor.
    flat = moments((np.array([1.0, 2.0, 3.0, 4.0]), np.full(4, 5.0)))
    assert leverage_factor(flat) == pytest.approx(1.5)
    assert leverage_factor(RatioMoments(4, 10.0, 30.0, 20.0, 100.0, 50.0)) is None
