"""The demo's compact results cells: lifts with their corrected interval, or marked untested."""

from __future__ import annotations

from experiments.analysis.analyze import MetricResult
from experiments.analysis.options import Correction
from experiments.analysis.stats.multiple import AdjustedComparison
from experiments.analysis.stats.results import Comparison, ResultCode
from simulator.results_table import format_cell


def _result(*, low_power: bool, significant: bool = False) -> MetricResult:
    comparison = Comparison(
        code=ResultCode.OK,
        control_n=30,
        treatment_n=31,
        alpha=0.05,
        control_mean=0.4,
        treatment_mean=0.5,
        lift_rel=0.25,
        low_power=low_power,
    )
    adjusted = AdjustedComparison(
        comparison=comparison,
        method=Correction.HOLM,
        p_adjusted=None if low_power else 0.01,
        level=None if low_power else 0.025,
        ci=None if low_power else (0.05, 0.45),
        significant=significant,
    )
    return MetricResult("acceptance_rate", "treatment", "python", comparison, adjusted)


def test_a_tested_row_shows_its_corrected_interval_and_significance() -> None:
    cell = format_cell(_result(low_power=False, significant=True))
    assert cell == "0.400→0.500 +25.0%* [+5%,+45%]"


def test_a_low_power_row_is_marked_and_has_no_interval() -> None:
    assert format_cell(_result(low_power=True)) == "0.400→0.500 +25.0% ~"


def test_no_result_is_a_dash() -> None:
    assert format_cell(None) == "—"
