"""CUPED: regression adjustment on a pre-period covariate, for mean and ratio metrics.

Each arm's estimate becomes Y − θ·X, where Y is the metric in the experiment period and X the
same metric in the pre-period (for ratios, the pre-period ratio Σm' / Σd'). One θ is shared by
both arms and estimated from the pooled users (control + treatment moments), as gbstats does:
θ = cov(Y, X) / var(X). Randomization makes E[X] equal across arms, so the lift stays unbiased
while its variance shrinks by about the squared correlation of Y and X.

For ratios the per-user covariances are delta-method linearisations: with R = μm/μd the
gradient is (1/μd, −R/μd) on (m, d), and likewise for the pre-period.
"""

from __future__ import annotations

import dataclasses

from experiments.analysis.stats.estimates import (
    ArmEstimate,
    is_zero_variance,
    ratio_variance,
    sample_covariance,
    sample_variance,
)
from experiments.analysis.stats.moments import CupedMeanMoments, CupedRatioMoments


@dataclasses.dataclass(frozen=True, slots=True)
class _Linearised:
    """Per-user variance of Y and X and their covariance, with the two means."""

    n: int
    post_mean: float
    pre_mean: float
    var_post: float
    var_pre: float
    cov: float


@dataclasses.dataclass(frozen=True, slots=True)
class CupedEstimates:
    """Both arms' CUPED-adjusted estimates and the shared θ."""

    theta: float
    control: ArmEstimate
    treatment: ArmEstimate


def _linearise_mean(m: CupedMeanMoments) -> _Linearised:
    n = m.n
    return _Linearised(
        n=n,
        post_mean=m.post_sum / n,
        pre_mean=m.pre_sum / n,
        var_post=sample_variance(m.post_sum, m.post_sum_squares, n),
        var_pre=sample_variance(m.pre_sum, m.pre_sum_squares, n),
        cov=sample_covariance(m.post_sum, m.pre_sum, m.post_pre_sum, n),
    )


def _linearise_ratio(m: CupedRatioMoments) -> _Linearised | None:
    """Delta-method view of (R_post, R_pre); None when a denominator sums to 0."""
    n = m.n
    if m.d_post_sum == 0 or m.d_pre_sum == 0:
        return None
    mu_m, mu_d = m.m_post_sum / n, m.d_post_sum / n
    mu_mp, mu_dp = m.m_pre_sum / n, m.d_pre_sum / n
    ratio, ratio_pre = mu_m / mu_d, mu_mp / mu_dp
    var_post = ratio_variance(
        mu_m,
        mu_d,
        sample_variance(m.m_post_sum, m.m_post_sum_squares, n),
        sample_variance(m.d_post_sum, m.d_post_sum_squares, n),
        sample_covariance(m.m_post_sum, m.d_post_sum, m.m_post_d_post_sum, n),
    )
    var_pre = ratio_variance(
        mu_mp,
        mu_dp,
        sample_variance(m.m_pre_sum, m.m_pre_sum_squares, n),
        sample_variance(m.d_pre_sum, m.d_pre_sum_squares, n),
        sample_covariance(m.m_pre_sum, m.d_pre_sum, m.m_pre_d_pre_sum, n),
    )
    # gᵀ Σ_cross g' with g = (1, −R)/μd and g' = (1, −R')/μd'.
    cov_mm = sample_covariance(m.m_post_sum, m.m_pre_sum, m.m_post_m_pre_sum, n)
    cov_md = sample_covariance(m.m_post_sum, m.d_pre_sum, m.m_post_d_pre_sum, n)
    cov_dm = sample_covariance(m.d_post_sum, m.m_pre_sum, m.d_post_m_pre_sum, n)
    cov_dd = sample_covariance(m.d_post_sum, m.d_pre_sum, m.d_post_d_pre_sum, n)
    cov = (cov_mm - ratio_pre * cov_md - ratio * cov_dm + ratio * ratio_pre * cov_dd) / (
        mu_d * mu_dp
    )
    return _Linearised(
        n=n, post_mean=ratio, pre_mean=ratio_pre, var_post=var_post, var_pre=var_pre, cov=cov
    )


def _linearise(m: CupedMeanMoments | CupedRatioMoments) -> _Linearised | None:
    if isinstance(m, CupedMeanMoments):
        return _linearise_mean(m)
    return _linearise_ratio(m)


def _adjusted(arm: _Linearised, theta: float) -> ArmEstimate:
    variance = arm.var_post + theta * theta * arm.var_pre - 2.0 * theta * arm.cov
    if is_zero_variance(variance, arm.var_post):
        variance = 0.0
    return ArmEstimate(
        n=arm.n,
        mean=arm.post_mean - theta * arm.pre_mean,
        variance=variance,
        unadjusted_mean=arm.post_mean,
    )


def cuped_estimates(
    control: CupedMeanMoments | CupedRatioMoments,
    treatment: CupedMeanMoments | CupedRatioMoments,
) -> CupedEstimates | None:
    """CUPED-adjusted arm estimates, or None (fall back to unadjusted) when X has no variance.

    Both arms need n ≥ 2 and, for ratios, a non-zero post-period denominator.
    """
    pooled: _Linearised | None
    if isinstance(control, CupedMeanMoments) and isinstance(treatment, CupedMeanMoments):
        pooled = _linearise_mean(control + treatment)
    elif isinstance(control, CupedRatioMoments) and isinstance(treatment, CupedRatioMoments):
        pooled = _linearise_ratio(control + treatment)
    else:
        raise TypeError("control and treatment must be moments of the same kind")
    arm_c = _linearise(control)
    arm_t = _linearise(treatment)
    if pooled is None or arm_c is None or arm_t is None:
        return None
    # No pre-period variance (e.g. every user new): θ is undefined, nothing to adjust with.
    if is_zero_variance(pooled.var_pre, abs(pooled.pre_mean) ** 2 + pooled.var_pre):
        return None
    if is_zero_variance(pooled.var_post, abs(pooled.post_mean) ** 2 + pooled.var_post):
        return None
    theta = pooled.cov / pooled.var_pre
    return CupedEstimates(
        theta=theta, control=_adjusted(arm_c, theta), treatment=_adjusted(arm_t, theta)
    )
