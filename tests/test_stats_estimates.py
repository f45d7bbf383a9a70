"""The mean/variance layer and CUPED from sufficient statistics, checked against raw user rows.

Statistics never see per-user rows in production; here the rows are simulated so the formulas
on sums can be compared with the same quantity computed directly (linearised per-user values).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from experiments.analysis.stats import compare
from experiments.analysis.stats.estimates import ratio_estimate
from experiments.analysis.stats.moments import CupedMeanMoments, CupedRatioMoments, RatioMoments

FloatArray = npt.NDArray[np.float64]


def _s(x: FloatArray) -> float:
    return float(x.sum())


def _users(seed: int, n: int) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Post and pre accepted (m) and shown (d) suggestions sharing a per-user propensity."""
    rng = np.random.default_rng(seed)
    propensity = rng.beta(2.0, 3.0, size=n)
    d = 1.0 + rng.poisson(8.0, size=n).astype(np.float64)
    dp = 1.0 + rng.poisson(8.0, size=n).astype(np.float64)
    m = rng.binomial(d.astype(np.int64), propensity).astype(np.float64)
    mp = rng.binomial(dp.astype(np.int64), propensity).astype(np.float64)
    return m, d, mp, dp


def _linearised(m: FloatArray, d: FloatArray, ratio: float) -> FloatArray:
    """Per-user influence of Σm/Σd: (m − R·d) / mean(d)."""
    return np.asarray((m - ratio * d) / d.mean(), dtype=np.float64)


def _cuped_ratio(m: FloatArray, d: FloatArray, mp: FloatArray, dp: FloatArray) -> CupedRatioMoments:
    return CupedRatioMoments(
        len(m),
        _s(m), _s(m * m), _s(d), _s(d * d),
        _s(mp), _s(mp * mp), _s(dp), _s(dp * dp),
        _s(m * d), _s(mp * dp), _s(m * mp), _s(m * dp), _s(d * mp), _s(d * dp),
    )  # fmt: skip


def test_ratio_variance_is_the_variance_of_the_linearised_values() -> None:
    m, d, _, _ = _users(1, 300)
    moments = RatioMoments(len(m), _s(m), _s(m * m), _s(d), _s(d * d), _s(m * d))
    result = ratio_estimate(moments)
    ratio = _s(m) / _s(d)
    assert result.mean == pytest.approx(ratio, rel=1e-12)
    assert result.variance == pytest.approx(float(np.var(_linearised(m, d, ratio), ddof=1)))


def test_cuped_ratio_matches_a_regression_on_linearised_values() -> None:
    arms = [_users(2, 400), _users(3, 450)]
    pooled = [np.concatenate([a[k] for a in arms]) for k in range(4)]

    def lin(
        rows: tuple[FloatArray, ...] | list[FloatArray],
    ) -> tuple[FloatArray, FloatArray, float, float]:
        m, d, mp, dp = rows
        ratio, ratio_pre = _s(m) / _s(d), _s(mp) / _s(dp)
        return _linearised(m, d, ratio), _linearised(mp, dp, ratio_pre), ratio, ratio_pre

    u, v, _, _ = lin(pooled)
    theta = float(np.cov(u, v, ddof=1)[0, 1] / np.var(v, ddof=1))
    adjusted_means, variances = [], []
    for arm in arms:
        u_arm, v_arm, ratio, ratio_pre = lin(arm)
        adjusted_means.append(ratio - theta * ratio_pre)
        variances.append(float(np.var(u_arm - theta * v_arm, ddof=1)) / len(u_arm))

    result = compare(_cuped_ratio(*arms[0]), _cuped_ratio(*arms[1]))
    assert result.cuped_applied
    assert result.lift_abs == pytest.approx(adjusted_means[1] - adjusted_means[0], rel=1e-9)
    assert result.se_abs == pytest.approx(float(np.sqrt(sum(variances))), rel=1e-9)


def test_cuped_mean_matches_a_pooled_regression() -> None:
    rng = np.random.default_rng(4)
    rows = []
    for n in (300, 320):
        x = rng.normal(5.0, 2.0, size=n)
        rows.append((x + rng.normal(0.0, 1.0, size=n), x))
    y_all = np.concatenate([r[0] for r in rows])
    x_all = np.concatenate([r[1] for r in rows])
    theta = float(np.cov(y_all, x_all, ddof=1)[0, 1] / np.var(x_all, ddof=1))

    def moments(y: FloatArray, x: FloatArray) -> CupedMeanMoments:
        return CupedMeanMoments(len(y), _s(y), _s(y * y), _s(x), _s(x * x), _s(y * x))

    result = compare(moments(*rows[0]), moments(*rows[1]))
    adjusted = [float(np.mean(y - theta * x)) for y, x in rows]
    variance = sum(float(np.var(y - theta * x, ddof=1)) / len(y) for y, x in rows)
    assert result.lift_abs == pytest.approx(adjusted[1] - adjusted[0], rel=1e-9)
    assert result.se_abs == pytest.approx(float(np.sqrt(variance)), rel=1e-9)
    # Relative lift divides by the unadjusted control mean (gbstats' convention).
    assert result.lift_rel == pytest.approx(
        (adjusted[1] - adjusted[0]) / float(np.mean(rows[0][0])), rel=1e-9
    )
