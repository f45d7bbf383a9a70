"""Percentile bootstrap and the paired difference (experiments/analysis/stats/bootstrap.py)."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.analysis.stats.bootstrap import (
    bootstrap_ci,
    mean,
    paired_difference,
    percentile,
)
from experiments.analysis.stats.results import ResultCode


def test_the_same_seed_gives_the_same_interval_and_another_seed_another() -> None:
    values = np.random.default_rng(1).normal(size=40)
    first = bootstrap_ci(values, seed=7, resamples=500)
    assert bootstrap_ci(values, seed=7, resamples=500) == first
    assert bootstrap_ci(values, seed=8, resamples=500).ci != first.ci
    assert first.code is ResultCode.OK and first.n == 40
    assert first.ci is not None and first.ci[0] < first.estimate < first.ci[1]  # type: ignore[operator]


def test_constant_scores_have_a_point_interval() -> None:
    result = bootstrap_ci([1.0] * 10)
    assert result.estimate == 1.0 and result.ci == (1.0, 1.0)


def test_percentile_statistic_interpolates_linearly() -> None:
    values = np.arange(1, 101, dtype=float)
    assert bootstrap_ci(values, statistic=percentile(50)).estimate == pytest.approx(50.5)
    assert bootstrap_ci(values, statistic=percentile(95)).estimate == pytest.approx(95.05)
    with pytest.raises(ValueError, match="percentile"):
        percentile(101)


def test_coverage_of_the_mean_is_near_the_nominal_level() -> None:
    # 300 samples of 50 normal values: a 95% interval should hold the true mean (0) in about
    # 95% of them; the percentile bootstrap is a little narrow at n = 50 (about 93–94%).
    rng = np.random.default_rng(2024)
    held = 0
    for i in range(300):
        ci = bootstrap_ci(rng.normal(size=50), seed=i, resamples=1000).ci
        assert ci is not None
        held += ci[0] <= 0.0 <= ci[1]
    assert 0.89 <= held / 300 <= 0.98


def test_identical_arms_differ_by_nothing() -> None:
    values = np.random.default_rng(3).uniform(size=30)
    result = paired_difference(values, values, resamples=999)
    assert result.estimate == 0.0 and result.ci == (0.0, 0.0) and result.p_value == 1.0


def test_a_constant_shift_is_found_exactly_with_the_smallest_p() -> None:
    values = np.random.default_rng(4).uniform(size=30)
    result = paired_difference(values, values + 1.0, resamples=999)
    assert result.estimate == pytest.approx(1.0)
    assert result.ci == pytest.approx((1.0, 1.0))
    # Every resampled difference is > 0: p = 2 · (0 + 1) / (999 + 1).
    assert result.p_value == pytest.approx(0.002)


def test_pairing_finds_a_small_shift_that_independent_intervals_miss() -> None:
    rng = np.random.default_rng(5)
    base = rng.normal(0.5, 0.3, size=60)  # large differences between samples
    treated = base + 0.05 + rng.normal(0, 0.01, size=60)  # small, consistent gain
    control_ci = bootstrap_ci(base).ci
    treated_ci = bootstrap_ci(treated).ci
    assert control_ci is not None and treated_ci is not None
    assert treated_ci[0] < control_ci[1]  # the arms' own intervals overlap
    difference = paired_difference(base, treated)
    assert difference.ci is not None and difference.ci[0] > 0.04
    assert difference.p_value is not None and difference.p_value < 0.01


def test_difference_of_percentiles_uses_the_same_resamples() -> None:
    latency = np.linspace(100, 200, 21)
    result = paired_difference(latency, latency * 2, statistic=percentile(50))
    assert result.estimate == pytest.approx(150.0)
    assert result.ci is not None and result.ci[0] > 0


@pytest.mark.parametrize(
    ("values", "code", "estimate"),
    [([], ResultCode.NO_SAMPLES, None), ([0.25], ResultCode.TOO_FEW_SAMPLES, 0.25)],
)
def test_degenerate_samples_get_a_code(
    values: list[float], code: ResultCode, estimate: float | None
) -> None:
    single = bootstrap_ci(values)
    assert (single.code, single.estimate, single.ci) == (code, estimate, None)
    paired = paired_difference(values, values)
    assert paired.code is code and paired.ci is None and paired.p_value is None


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="length"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci([1.0, 2.0], alpha=1.5)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_ci([1.0, 2.0], resamples=0)
    assert mean(np.array([[1.0, 3.0]]))[0] == 2.0
