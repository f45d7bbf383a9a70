"""Sample-ratio mismatch: Pearson χ² of users per arm against the configured weights."""

from __future__ import annotations

from collections.abc import Sequence

from experiments.analysis.stats._distributions import chi2_sf


def srm_p_value(observed: Sequence[int], weights: Sequence[float]) -> float:
    """χ² goodness-of-fit p-value of users per arm against weights (normalised to sum to 1).

    Arms with weight ≤ 0 are left out of the statistic, but the degrees of freedom stay
    (arms − 1), as in gbstats. No users at all gives 1 (nothing to reject).
    """
    if len(observed) != len(weights):
        raise ValueError(f"{len(observed)} arms observed but {len(weights)} weights")
    if len(observed) < 2:
        raise ValueError("SRM needs at least two arms")
    if any(count < 0 for count in observed):
        raise ValueError("user counts must be ≥ 0")
    total_weight = sum(w for w in weights if w > 0)
    if total_weight <= 0:
        raise ValueError("weights must have a positive sum")
    total = sum(observed)
    if total == 0:
        return 1.0
    statistic = 0.0
    for count, weight in zip(observed, weights, strict=True):
        if weight <= 0:
            continue
        expected = weight / total_weight * total
        statistic += (count - expected) ** 2 / expected
    return chi2_sf(statistic, len(observed) - 1)
