"""The analysis as a text table for terminals (``codelift analyze --format table``)."""

from __future__ import annotations

from experiments.analysis.analyze import AnalysisReport, MetricResult
from experiments.definitions.metrics_catalog import METRICS


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2%}"


def _num(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}"


def _interval(bounds: tuple[float, float] | None, *, percent: bool) -> str:
    if bounds is None:
        return "—"
    low, high = bounds
    return f"[{low:+.2%}, {high:+.2%}]" if percent else f"[{low:+.4g}, {high:+.4g}]"


def _p(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def _row(result: MetricResult) -> list[str]:
    c = result.comparison
    marker = ""
    if result.adjusted is not None and result.adjusted.significant:
        marker = " *"
    elif c.low_power:
        marker = " ~"
    # The interval drawn is the one the marker is decided on: the family-adjusted one.
    interval = result.adjusted.ci if result.adjusted is not None else None
    return [
        result.metric + ("" if METRICS[result.metric].higher_is_better else " (↓)"),
        result.family,
        result.arm,
        result.language or "all",
        _num(c.control_mean),
        _num(c.treatment_mean),
        _num(c.lift_abs),
        _pct(c.lift_rel) + marker,
        _interval(interval, percent=True),
        _p(c.p_rel),
        _p(result.adjusted.p_adjusted if result.adjusted else None),
        _interval(c.seq_ci_rel, percent=True),
        _p(c.seq_p_rel),
        c.code.value if c.code.value != "ok" else "",
    ]


HEADER = [
    "metric",
    "family",
    "arm",
    "language",
    "control",
    "treatment",
    "abs lift",
    "rel lift",
    "rel CI (adjusted)",
    "p",
    "p adj",
    "seq CI (rel)",
    "seq p",
    "note",
]


def aligned(rows: list[list[str]]) -> list[str]:
    """``rows`` (the first one the header) as left-aligned columns, a rule under the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines: list[str] = []
    for index, row in enumerate(rows):
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return lines


def render(report: AnalysisReport) -> str:
    """The report as aligned text."""
    users = ", ".join(f"{arm} {n}" for arm, n in report.users_per_arm.items())
    srm = "—" if report.srm_p_value is None else f"{report.srm_p_value:.3g}"
    first = report.first_exposure.isoformat(timespec="minutes") if report.first_exposure else "—"
    last = report.last_event.isoformat(timespec="minutes") if report.last_event else "—"
    capping = (
        "capping " + ", ".join(sorted(set(report.capping.values()))) + " per user"
        if report.capping
        else "capping off"
    )
    excluded = (
        f"; {report.multiple_arm_users} users exposed to several arms left out"
        if report.multiple_arm_users
        else ""
    )
    lines = [
        f"experiment {report.experiment} ({report.status}, coverage {report.coverage:g}), "
        f"control = {report.control}",
        f"users per arm: {users}; SRM χ² p = {srm}{excluded}",
        f"data: {first} → {last} (from {report.source}); α = {report.alpha:g}, sequential N* = "
        f"{report.n_star:g}, CUPED {'on' if report.cuped else 'off'}, {capping}",
        f"families: primary metrics × arms{' × languages' if report.by_language else ''} with "
        f"{report.correction}; secondary metrics with bh; guardrails by non-inferiority",
        "* = significant after correction (the CI shown is the family-adjusted one); ~ = too few "
        f"users to judge (under {report.min_effective_users:g} effective users in an arm); "
        "(↓) = lower is better",
        "",
    ]
    lines += aligned([HEADER, *(_row(result) for result in report.results)])
    if report.guardrails:
        lines += ["", "guardrails (non-inferiority, sequential):"]
        for g in report.guardrails:
            verdict = "non-inferior" if g.result.non_inferior else "not shown non-inferior"
            lines.append(
                f"  {g.metric} in {g.arm}: margin {g.result.margin:.0%}, "
                f"lift {_pct(g.result.lift_rel)}, bound {_pct(g.result.bound)}, "
                f"p = {_p(g.result.p_value)} → {verdict}"
            )
    if report.health:
        lines += ["", "health checks:"]
        for check in report.health:
            where = f" ({check.slice})" if check.slice else ""
            lines.append(f"  {check.status.value:<5} {check.name}{where}: {check.reason}")
    return "\n".join(lines)
