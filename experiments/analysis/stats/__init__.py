"""Statistics on user-level sufficient statistics: lifts, CIs, sequential tests, SRM, CUPED."""

from experiments.analysis.options import DEFAULT_N_STAR, Correction
from experiments.analysis.stats.bayesian import chance_to_win
from experiments.analysis.stats.compare import compare
from experiments.analysis.stats.multiple import (
    AdjustedComparison,
    adjust,
    adjust_p_values,
    ci_levels,
)
from experiments.analysis.stats.noninferiority import non_inferiority
from experiments.analysis.stats.results import Comparison, Interval, NonInferiority, ResultCode
from experiments.analysis.stats.srm import srm_p_value

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
