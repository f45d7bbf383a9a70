"""``--check``: does the analysis find the effects the scenario put in, and only those?

Effect scenario: for every checked metric (``Scenario.check_metrics``), treatment arm and
language (and overall), the true relative lift must lie in the analysis's CI. The CIs are
Bonferroni intervals over the checked family (level α / m, from each comparison's estimate,
standard error and degrees of freedom), so the whole check holds with probability ≥ 1 − α.
Languages the analysis flags ``low_power`` (too few effective users per arm: their standard
errors run too small) are shown but not judged, as the analysis leaves them out of its tests.
A/A scenario: no comparison of any metric, overall or per language, may be significant after
the analysis's own multiple-comparison correction.
"""

from __future__ import annotations

import dataclasses
import math

import sqlalchemy

from experiments.analysis.analyze import AnalysisReport, analyze_experiment
from experiments.analysis.rollups import refresh_rollups
from experiments.analysis.stats.frequentist import t_interval
from simulator.behaviour import Truth
from simulator.scenario import Scenario

ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class CheckRow:
    """One comparison the check looked at."""

    metric: str
    arm: str
    language: str | None
    truth: float | None
    estimate: float | None
    ci: tuple[float, float] | None
    ok: bool
    judged: bool = True


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The verdict, the rows behind it and the analysis it read."""

    kind: str  # "effect" or "a/a"
    rows: list[CheckRow]
    report: AnalysisReport

    @property
    def passed(self) -> bool:
        """Every row is as it should be (and there was something to judge)."""
        return any(row.judged for row in self.rows) and all(row.ok for row in self.rows)

    def render(self) -> str:
        """The rows as a table, failures marked."""
        lines = [f"check ({self.kind}): {'PASSED' if self.passed else 'FAILED'}"]
        lines.append(f"{'metric':<18} {'arm':<10} {'language':<11} {'truth':>8} {'lift':>8}  CI")
        for row in self.rows:
            ci = f"[{row.ci[0]:+.2%}, {row.ci[1]:+.2%}]" if row.ci else "n/a"
            truth = f"{row.truth:+.2%}" if row.truth is not None else "0"
            lift = f"{row.estimate:+.2%}" if row.estimate is not None else "n/a"
            mark = "" if row.ok else "  <-- FAIL"
            if not row.judged:
                mark = "  (too few users: not judged)"
            lines.append(
                f"{row.metric:<18} {row.arm:<10} {row.language or 'all':<11} "
                f"{truth:>8} {lift:>8}  {ci}{mark}"
            )
        return "\n".join(lines)


def run_check(
    conn: sqlalchemy.Connection, scenario: Scenario, truth: Truth, *, cuped: bool = True
) -> CheckResult:
    """Analyze the scenario's experiment as ``codelift analyze --by language`` does (rollups
    refreshed; CUPED unless ``cuped`` is False) and judge it."""
    refresh_rollups(conn)
    report = analyze_experiment(
        conn, scenario.experiment, by_language=True, cuped=cuped, alpha=ALPHA
    )
    if scenario.is_aa:
        rows = [
            CheckRow(
                metric=result.metric,
                arm=result.arm,
                language=result.language,
                truth=None,
                estimate=result.comparison.lift_rel,
                ci=result.adjusted.ci if result.adjusted else None,
                ok=not (result.adjusted and result.adjusted.significant),
                judged=not result.comparison.low_power,
            )
            for result in report.results
        ]
        return CheckResult(kind="a/a", rows=rows, report=report)
    control = scenario.experiment.arms[0].name
    checked = [result for result in report.results if result.metric in scenario.check_metrics]
    judged = [result for result in checked if not result.comparison.low_power]
    level = ALPHA / max(1, len(judged))
    rows = []
    for result in checked:
        comparison = result.comparison
        true_lift = truth.relative_lift(result.metric, result.arm, control, result.language)
        interval = None
        if comparison.lift_rel is not None and comparison.se_rel and comparison.dof:
            interval = t_interval(comparison.lift_rel, comparison.se_rel, comparison.dof, level)
        ok = (
            interval is not None
            and math.isfinite(true_lift)
            and interval[0] <= true_lift <= interval[1]
        )
        rows.append(
            CheckRow(
                metric=result.metric,
                arm=result.arm,
                language=result.language,
                truth=true_lift if math.isfinite(true_lift) else None,
                estimate=comparison.lift_rel,
                ci=interval,
                ok=ok or comparison.low_power,
                judged=not comparison.low_power,
            )
        )
    return CheckResult(kind="effect", rows=rows, report=report)
