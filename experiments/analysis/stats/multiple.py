"""Multiple comparisons across a family (languages × metrics): Holm and Benjamini–Hochberg.

A hypothesis is rejected when its adjusted p-value is < α. Each comparison's CI is then rebuilt
at a level γ chosen so that the CI excludes 0 exactly when the adjusted p-value is < α (the
single-test CI at level γ excludes 0 ⇔ the single-test p < γ, for the t-test and for the
confidence sequence alike). With the m p-values sorted ascending, p(1) ≤ … ≤ p(m):

- Holm (controls the family-wise error): r hypotheses are rejected. The i-th rejected one gets
  γ = α / (m − i + 1), the Bonferroni level of its step; every other one gets α / (m − r), the
  level of the step where the procedure stopped. These are the step-down levels of the
  procedure itself, so a rejected effect's CI excludes 0 and no other does.
- Benjamini–Hochberg (controls the false-discovery rate): with k = max{i : p(i) < iα/m} (0 when
  none), every CI gets γ = max(k, 1)·α/m. For the k selected this is the false-coverage-rate
  interval of Benjamini & Yekutieli (2005); an unselected p(i) is ≥ iα/m ≥ (k + 1)α/m > γ.

Comparisons without the chosen p-value (a non-OK code), and those flagged ``low_power`` (too
few users per arm for a trustworthy p-value), are left out of the family: never significant,
and they do not dilute the others' correction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from experiments.analysis.options import Correction
from experiments.analysis.stats.frequentist import t_interval
from experiments.analysis.stats.results import Comparison, Interval
from experiments.analysis.stats.sequential import cs_interval, tuning_rho


@dataclasses.dataclass(frozen=True, slots=True)
class AdjustedComparison:
    """A comparison with its family-adjusted p-value, CI level, CI and decision."""

    comparison: Comparison
    method: Correction
    p_adjusted: float | None
    # The two-sided error level the CI was rebuilt at (γ above).
    level: float | None
    ci: Interval | None
    significant: bool

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready values, the comparison nested."""
        return {
            "comparison": self.comparison.to_dict(),
            "method": self.method.value,
            "p_adjusted": self.p_adjusted,
            "level": self.level,
            "ci": list(self.ci) if self.ci is not None else None,
            "significant": self.significant,
        }


def _check(p_values: Sequence[float], alpha: float | None = None) -> None:
    if any(not 0.0 <= p <= 1.0 for p in p_values):
        raise ValueError("p-values must be in [0, 1]")
    if alpha is not None and not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def adjust_p_values(p_values: Sequence[float], method: Correction | str) -> list[float]:
    """Holm or Benjamini–Hochberg adjusted p-values, in the input order."""
    method = Correction(method)
    _check(p_values)
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    if method is Correction.HOLM:
        # Step-down: running maximum of (m − rank + 1)·p over ascending ranks.
        running = 0.0
        for rank, index in enumerate(order):
            running = max(running, min(1.0, (m - rank) * p_values[index]))
            adjusted[index] = running
    else:
        # Step-up: running minimum of m·p / rank over descending ranks.
        running = 1.0
        for rank in range(m, 0, -1):
            index = order[rank - 1]
            running = min(running, m * p_values[index] / rank)
            adjusted[index] = running
    return adjusted


def ci_levels(p_values: Sequence[float], method: Correction | str, alpha: float) -> list[float]:
    """Per hypothesis, the level γ whose CI excludes 0 exactly when adjusted p < alpha."""
    method = Correction(method)
    _check(p_values, alpha)
    m = len(p_values)
    if m == 0:
        return []
    adjusted = adjust_p_values(p_values, method)
    order = sorted(range(m), key=lambda i: p_values[i])
    if method is Correction.BH:
        selected = sum(1 for p in adjusted if p < alpha)
        return [max(selected, 1) * alpha / m] * m
    rejected = sum(1 for p in adjusted if p < alpha)
    levels = [0.0] * m
    for rank, index in enumerate(order):
        # Ranks are 0-based here: step rank + 1 of Holm tests at α / (m − rank).
        levels[index] = alpha / (m - rank) if rank < rejected else alpha / (m - rejected)
    return levels


def _pick(
    comparison: Comparison, relative: bool, sequential: bool
) -> tuple[float, float, float] | None:
    """(p-value, estimate, se) of the chosen test, or None when the comparison has none."""
    estimate = comparison.lift_rel if relative else comparison.lift_abs
    se = comparison.se_rel if relative else comparison.se_abs
    if sequential:
        p = comparison.seq_p_rel if relative else comparison.seq_p_abs
    else:
        p = comparison.p_rel if relative else comparison.p_abs
    if p is None or estimate is None or se is None or comparison.low_power:
        return None
    return (p, estimate, se)


def _interval(
    comparison: Comparison, estimate: float, se: float, level: float, sequential: bool
) -> Interval:
    if sequential:
        if comparison.n_star is None:
            raise ValueError("a sequential adjustment needs comparisons made with sequential=True")
        # Keep ρ tuned to the original α: then "sequence at γ excludes 0" ⇔ "p < γ".
        rho = tuning_rho(comparison.alpha, comparison.n_star)
        n_total = comparison.control_n + comparison.treatment_n
        return cs_interval(estimate, se * se, n_total, level, rho)
    assert comparison.dof is not None  # set whenever a p-value is
    return t_interval(estimate, se, comparison.dof, level)


def adjust(
    comparisons: Sequence[Comparison],
    method: Correction | str,
    *,
    alpha: float = 0.05,
    relative: bool = True,
    sequential: bool = False,
) -> list[AdjustedComparison]:
    """Adjust a family of comparisons; CIs rebuilt to agree with the adjusted decisions.

    ``relative`` and ``sequential`` pick which of each comparison's p-values forms the family.
    """
    method = Correction(method)
    picked = [_pick(c, relative, sequential) for c in comparisons]
    members = [(i, test) for i, test in enumerate(picked) if test is not None]
    p_values = [test[0] for _, test in members]
    adjusted = adjust_p_values(p_values, method)
    levels = ci_levels(p_values, method, alpha)
    out = [
        AdjustedComparison(c, method, p_adjusted=None, level=None, ci=None, significant=False)
        for c in comparisons
    ]
    for j, (i, (_, estimate, se)) in enumerate(members):
        out[i] = AdjustedComparison(
            comparisons[i],
            method,
            p_adjusted=adjusted[j],
            level=levels[j],
            ci=_interval(comparisons[i], estimate, se, levels[j], sequential),
            significant=adjusted[j] < alpha,
        )
    return out
