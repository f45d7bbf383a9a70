"""The demo's results: one compact row per language, the headline metrics side by side.

Every number comes from ``experiments.analysis.analyze`` (the full table is ``codelift analyze KEY
--by language``); this only picks the columns a first look needs.
"""

from __future__ import annotations

from experiments.analysis.analyze import AnalysisReport, MetricResult

COLUMNS = (
    ("acceptance_rate", "acceptance"),
    ("cpr_120", "CPR@120s"),
    ("pct_code_written", "% code written"),
    ("latency_mean_per_completion", "latency ms"),
)


def format_cell(result: MetricResult | None) -> str:
    """One metric's cell: control→treatment means and the lift, with its corrected CI and
    significance marker, or `~` when the slice has too few users to test."""
    if result is None:
        return "—"
    c = result.comparison
    if c.control_mean is None or c.treatment_mean is None:
        return "—"
    precise = result.metric != "latency_mean_per_completion"
    base = f"{c.control_mean:.3f}" if precise else f"{c.control_mean:.0f}"
    arm = f"{c.treatment_mean:.3f}" if precise else f"{c.treatment_mean:.0f}"
    if c.lift_rel is None:
        return f"{base}→{arm}"
    if c.low_power:
        # Too few effective users to test: the lift is shown, an interval would mislead.
        return f"{base}→{arm} {c.lift_rel:+.1%} ~"
    significant = "*" if result.adjusted is not None and result.adjusted.significant else ""
    ci = result.adjusted.ci if result.adjusted is not None else None
    interval = f" [{ci[0]:+.0%},{ci[1]:+.0%}]" if ci else ""
    return f"{base}→{arm} {c.lift_rel:+.1%}{significant}{interval}"


def render_compact(report: AnalysisReport) -> str:
    """Per treatment arm and language: users and the headline metrics' lifts with CIs."""
    by_key = {(r.metric, r.arm, r.language): r for r in report.results}
    arms = list(dict.fromkeys(r.arm for r in report.results))
    languages: list[str | None] = [None]
    languages += sorted({r.language for r in report.results if r.language is not None})
    header = ["arm", "language", "users", *(title for _, title in COLUMNS)]
    rows = [header]
    for arm in arms:
        for language in languages:
            first = by_key.get(("acceptance_rate", arm, language))
            users = f"{first.comparison.control_n}/{first.comparison.treatment_n}" if first else "—"
            cells = [format_cell(by_key.get((metric, arm, language))) for metric, _ in COLUMNS]
            rows.append([arm, language or "all", users, *cells])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    adjusted = " (CUPED-adjusted)" if report.cuped else ""
    lines.append(
        f"users: {report.control}/treatment; control→treatment means, relative lift{adjusted}, "
        f"{report.correction}-adjusted CI; * significant at α = {report.alpha:g}; "
        f"~ too few users to test (under {report.min_effective_users:g} effective per arm)"
    )
    return "\n".join(lines)
