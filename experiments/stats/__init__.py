"""Statistics on user-level sufficient statistics: lifts, CIs, sequential tests, SRM, CUPED."""

from experiments.stats.bayesian import chance_to_win
from experiments.stats.compare import compare
from experiments.stats.multiple import (
    AdjustedComparison,
    Correction,
    adjust,
    adjust_p_values,
    ci_levels,
)
from experiments.stats.noninferiority import non_inferiority
from experiments.stats.results import Comparison, Interval, NonInferiority, ResultCode
from experiments.stats.sequential import DEFAULT_N_STAR
from experiments.stats.srm import srm_p_value

__all__ = [
    "DEFAULT_N_STAR",
    "AdjustedComparison",
    "Comparison",
    "Correction",
    "Interval",
    "NonInferiority",
    "ResultCode",
    "adjust",
    "adjust_p_values",
    "chance_to_win",
    "ci_levels",
    "compare",
    "non_inferiority",
    "srm_p_value",
]
