"""Asymptotic confidence sequences (Waudby-Smith et al. 2023), valid under continuous peeking.

The formulas are those GrowthBook uses (arXiv 2103.06476v7: eq. 9 for the interval, eq. 161 for
the tuning ρ, eq. 155 for the p-value). With N = nc + nt users and V the variance of the lift
estimate, s² = V·N and the half-width is

    s · sqrt( 2(Nρ² + 1) / (N²ρ²) · log( sqrt(Nρ² + 1) / α ) ),

where ρ is tuned so the sequence is tightest when N = N* (the tuning parameter). The p-value is
1 / e-value with the same ρ, so "p < γ" holds exactly when the sequence at level γ (same ρ)
excludes 0; multiple.py relies on that.
"""

from __future__ import annotations

import math

from experiments.analysis.stats.results import Interval


def tuning_rho(alpha: float, n_star: float) -> float:
    """ρ that makes the sequence at level alpha tightest at N = n_star."""
    log_alpha = -2.0 * math.log(alpha)
    return math.sqrt((log_alpha + math.log(log_alpha + 1.0)) / n_star)


def cs_interval(
    estimate: float, variance: float, n_total: int, alpha: float, rho: float
) -> Interval:
    """The (1 − alpha) confidence sequence at N = n_total; needs variance > 0."""
    nr2 = n_total * rho * rho
    s = math.sqrt(variance * n_total)
    half = s * math.sqrt(
        2.0 * (nr2 + 1.0) * math.log(math.sqrt(nr2 + 1.0) / alpha) / (n_total * n_total * rho * rho)
    )
    return (estimate - half, estimate + half)


def cs_p_value(estimate: float, variance: float, n_total: int, rho: float) -> float:
    """Always-valid p-value (1 / e-value, capped at 1); needs variance > 0."""
    nr2p1 = n_total * rho * rho + 1.0
    st2 = estimate * estimate * n_total / variance
    # log e-value, so a huge z does not overflow exp().
    log_evalue = rho * rho * st2 / (2.0 * nr2p1) - 0.5 * math.log(nr2p1)
    if log_evalue <= 0.0:
        return 1.0
    return math.exp(-log_evalue)
