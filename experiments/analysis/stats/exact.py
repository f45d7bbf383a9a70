"""Exact tests for small or degenerate proportions, where the normal approximation fails."""

from __future__ import annotations

# scipy ships no type stubs.
from scipy import stats  # type: ignore[import-untyped]

from experiments.analysis.stats.estimates import ArmEstimate


def fisher_exact_p(control: ArmEstimate, treatment: ArmEstimate) -> float:
    """Two-sided Fisher exact p-value of two arms of 0/1 values (mean = share of 1s).

    Fisher's test conditions on the total of 1s, so it is conservative; it is used only where
    the t-test has nothing to stand on (an arm constant at 0 % or 100 %).
    """
    table = [
        [round(control.mean * control.n), control.n - round(control.mean * control.n)],
        [round(treatment.mean * treatment.n), treatment.n - round(treatment.mean * treatment.n)],
    ]
    return float(stats.fisher_exact(table, alternative="two-sided").pvalue)
