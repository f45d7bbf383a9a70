"""Per-arm mean and per-user variance of a metric from its sufficient statistics.

The variance returned is per user (the variance of the arm mean is ``variance / n``), as the
Welch test and the delta method need it. Ratio metrics (Σm / Σd over users) use the delta
method: var ≈ (σm² − 2R·σmd + R²·σd²) / μd², with R = μm / μd.
"""

from __future__ import annotations

import dataclasses
import math

from experiments.analysis.stats.moments import (
    CupedMeanMoments,
    CupedRatioMoments,
    MeanMoments,
    Moments,
    RatioMoments,
)
from experiments.analysis.stats.results import ResultCode

# A variance below this fraction of the second moment is rounding noise from Σm² − (Σm)²/n
# (float error is ~1e-16 of Σm²), so the data are treated as constant.
ZERO_VARIANCE_TOLERANCE = 1e-12
# A control mean below this fraction of its standard deviation is rounding noise in Σm
# (e.g. 0.1 + 0.2 − 0.3), so relative lift is not computed: dividing by it would be garbage.
ZERO_MEAN_TOLERANCE = 1e-12


@dataclasses.dataclass(frozen=True, slots=True)
class ArmEstimate:
    """An arm's metric: n users, the (possibly CUPED-adjusted) mean, its per-user variance."""

    n: int
    mean: float
    variance: float
    # The mean before any regression adjustment: what relative lift divides by.
    unadjusted_mean: float
    # The sample size the variance estimate rests on, for the degrees of freedom (None: n).
    dof_n: float | None = None


def sample_variance(total: float, squares: float, n: int) -> float:
    """Unbiased variance (divisor n − 1) from Σx and Σx²; needs n ≥ 2."""
    return (squares - total * total / n) / (n - 1)


def sample_covariance(x_total: float, y_total: float, xy_total: float, n: int) -> float:
    """Unbiased covariance (divisor n − 1) from Σx, Σy and Σxy; needs n ≥ 2."""
    return (xy_total - x_total * y_total / n) / (n - 1)


def is_zero_variance(variance: float, scale: float) -> bool:
    """Whether a variance is 0 (or negative) up to rounding relative to ``scale``."""
    return variance <= ZERO_VARIANCE_TOLERANCE * abs(scale)


def is_zero_baseline(arm: ArmEstimate) -> bool:
    """Whether the arm's unadjusted mean is 0 up to rounding, so no relative lift exists."""
    return abs(arm.unadjusted_mean) <= ZERO_MEAN_TOLERANCE * math.sqrt(max(arm.variance, 0.0))


def check_arm(moments: Moments) -> ResultCode:
    """The code that stops inference on one arm's moments, or OK."""
    if moments.n <= 0:
        return ResultCode.NO_USERS
    if moments.n < 2:
        return ResultCode.TOO_FEW_USERS
    if isinstance(moments, RatioMoments) and moments.d_sum == 0:
        return ResultCode.ZERO_DENOMINATOR
    if isinstance(moments, CupedRatioMoments) and moments.d_post_sum == 0:
        return ResultCode.ZERO_DENOMINATOR
    return ResultCode.OK


def post_period(moments: Moments) -> MeanMoments | RatioMoments:
    """The metric itself, without any pre-period covariate."""
    if isinstance(moments, CupedMeanMoments):
        return MeanMoments(moments.n, moments.post_sum, moments.post_sum_squares)
    if isinstance(moments, CupedRatioMoments):
        return RatioMoments(
            moments.n,
            moments.m_post_sum,
            moments.m_post_sum_squares,
            moments.d_post_sum,
            moments.d_post_sum_squares,
            moments.m_post_d_post_sum,
        )
    return moments


def arm_mean(moments: Moments) -> float | None:
    """The arm's unadjusted metric value, or None when it is undefined (no users, Σd = 0)."""
    metric = post_period(moments)
    if metric.n <= 0:
        return None
    if isinstance(metric, RatioMoments):
        return metric.m_sum / metric.d_sum if metric.d_sum != 0 else None
    return metric.sum / metric.n


def effective_users(moments: Moments) -> float:
    """Kish's effective number of users behind the arm's metric: (Σw)² / Σw².

    w is the user's denominator for a ratio metric (its weight in Σm / Σd) and the user's value
    for a mean metric. It is n when every user weighs the same and far less when a few heavy
    users carry the metric: then the per-user variance, the delta method and CUPED's θ rest on
    those few, and the normal / t reference is too narrow. For 0/1 values it is the count of 1s.
    """
    metric = post_period(moments)
    if isinstance(metric, RatioMoments):
        total, squares = metric.d_sum, metric.d_sum_squares
    else:
        total, squares = metric.sum, metric.sum_squares
    if squares <= 0.0:
        return float(metric.n)
    return total * total / squares


def leverage_factor(moments: Moments) -> float | None:
    """HC3's inflation of a ratio metric's residual variance, from third-order sums.

    A ratio Σm / Σd is a weighted mean of the users' rates with weights d, so user i has
    leverage h = d / Σd: the fitted rate is pulled towards the heavy users and their residuals
    r = m − R·d shrink. HC3 (MacKinnon & White 1985; Long & Ervin 2000 for small samples)
    divides each r² by (1 − h)²; to first order in h that is Σr²·(1 + 2h), so the variance
    grows by 1 + 2·Σr²d / (Σd·Σr²), which the sums Σm²d, Σmd², Σd³ give. None for a mean
    metric, without those sums, or with no residual variance.
    """
    metric = post_period(moments)
    if not isinstance(metric, RatioMoments) or metric.d_sum <= 0:
        return None
    if isinstance(moments, CupedRatioMoments):
        m2d, md2, d3 = moments.m2d_sum, moments.md2_sum, moments.d3_sum
    else:
        m2d, md2, d3 = metric.m2d_sum, metric.md2_sum, metric.d3_sum
    if m2d == md2 == d3 == 0.0:
        return None
    ratio = metric.m_sum / metric.d_sum
    residual = metric.m_sum_squares - 2 * ratio * metric.md_sum + ratio**2 * metric.d_sum_squares
    weighted = m2d - 2 * ratio * md2 + ratio**2 * d3
    if residual <= ZERO_VARIANCE_TOLERANCE * metric.m_sum_squares:
        return None
    return 1.0 + 2.0 * max(weighted, 0.0) / (metric.d_sum * residual)


def small_sample_corrected(arm: ArmEstimate, moments: Moments) -> ArmEstimate:
    """The estimate with heavy users' weight on its variance accounted for.

    With a few heavy users the per-user variance rests on far fewer than n users. A ratio
    metric's variance grows by HC3's leverage factor (``leverage_factor``); a mean metric's (all
    users weigh the same in a mean) by Kish's small-sample factor e / (e − 1) in place of
    n / (n − 1). Kish's effective users e (``effective_users``) replace n in the degrees of
    freedom. Equal weights change almost nothing. Calibrated by seeded A/A simulation on
    heavy-tailed users (bench/stats_calibration.py, tests/test_stats_heavy_tails.py).
    """
    n = arm.n
    effective = min(float(n), max(effective_users(moments), 2.0))
    factor = leverage_factor(moments)
    if factor is None:
        factor = (effective / (effective - 1.0)) / (n / (n - 1.0))
    return dataclasses.replace(arm, variance=arm.variance * factor, dof_n=effective)


def mean_estimate(moments: MeanMoments, *, proportion: bool = False) -> ArmEstimate:
    """Mean and per-user variance of a mean metric; needs n ≥ 2.

    With ``proportion`` the values are 0/1 and the variance is p(1 − p) (divisor n), the
    binomial convention of gbstats' ProportionStatistic.
    """
    n = moments.n
    mean = moments.sum / n
    if proportion:
        variance = mean * (1.0 - mean)
    else:
        variance = sample_variance(moments.sum, moments.sum_squares, n)
    if is_zero_variance(variance, moments.sum_squares / n):
        variance = 0.0
    return ArmEstimate(n=n, mean=mean, variance=variance, unadjusted_mean=mean)


def ratio_variance(
    mean_m: float, mean_d: float, var_m: float, var_d: float, cov_md: float
) -> float:
    """Per-user delta-method variance of μm / μd."""
    ratio = mean_m / mean_d
    return (var_m - 2.0 * ratio * cov_md + ratio * ratio * var_d) / (mean_d * mean_d)


def ratio_estimate(moments: RatioMoments) -> ArmEstimate:
    """Ratio Σm / Σd and its per-user delta-method variance; needs n ≥ 2 and Σd ≠ 0."""
    n = moments.n
    mean_m = moments.m_sum / n
    mean_d = moments.d_sum / n
    variance = ratio_variance(
        mean_m,
        mean_d,
        sample_variance(moments.m_sum, moments.m_sum_squares, n),
        sample_variance(moments.d_sum, moments.d_sum_squares, n),
        sample_covariance(moments.m_sum, moments.d_sum, moments.md_sum, n),
    )
    ratio = mean_m / mean_d
    scale = (moments.m_sum_squares + ratio * ratio * moments.d_sum_squares) / (n * mean_d**2)
    if is_zero_variance(variance, scale):
        variance = 0.0
    return ArmEstimate(n=n, mean=ratio, variance=variance, unadjusted_mean=ratio)


def estimate(moments: MeanMoments | RatioMoments, *, proportion: bool = False) -> ArmEstimate:
    """Mean and per-user variance of either kind of metric (``check_arm`` must say OK)."""
    if isinstance(moments, RatioMoments):
        return ratio_estimate(moments)
    return mean_estimate(moments, proportion=proportion)
