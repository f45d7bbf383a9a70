"""Chance to win: the posterior probability that treatment is better, a secondary view.

As gbstats' Gaussian effect model with an improper flat prior: the posterior of the lift is
Normal(estimate, se²), so P(lift > 0) = Φ(estimate / se).
"""

from __future__ import annotations

from experiments.analysis.stats._distributions import norm_cdf


def chance_to_win(estimate: float, se: float, *, higher_is_better: bool = True) -> float:
    """P(treatment is better than control) in 0..1; 0.5 when se is 0 and the estimate is 0."""
    if se <= 0.0:
        if estimate == 0.0:
            return 0.5
        better = estimate > 0.0 if higher_is_better else estimate < 0.0
        return 1.0 if better else 0.0
    p_higher = norm_cdf(estimate / se)
    return p_higher if higher_is_better else 1.0 - p_higher
