"""The experiment page's lifts: the forest chart and the results tables.

Each chart and table draws the interval that agrees with the marker beside it. The markers of
the relative lifts are the multiple-comparison decisions, so they come with the corrected CI
(``ci_adjusted``: rebuilt at the level at which it excludes 0 exactly when the adjusted p is
below α); the uncorrected 95 % CI is there too, named as such. Corrections are made on the
relative lift only, so the absolute view marks the uncorrected test of its own 95 % CI.
"""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import data
from dashboard.views.widgets import table

SIGNIFICANT = "✱ significant"
NOT_SIGNIFICANT = "n.s."
# A row with too few effective users per arm: shown, not tested (experiments.analysis.analyze).
TOO_FEW_USERS = "too few users"
# No p-value at all (no users, a zero baseline, no variance): nothing to mark.
NOT_TESTED = "not tested"
UNCORRECTED_SIGNIFICANT = "95% CI excludes 0 (uncorrected)"
UNCORRECTED_NOT_SIGNIFICANT = "95% CI includes 0"
_COLORS = {
    SIGNIFICANT: "#d62728",
    UNCORRECTED_SIGNIFICANT: "#ff7f0e",
    NOT_SIGNIFICANT: "#888888",
    UNCORRECTED_NOT_SIGNIFICANT: "#888888",
    TOO_FEW_USERS: "#c7c7c7",
    NOT_TESTED: "#c7c7c7",
}


def verdicts(frame: pd.DataFrame) -> list[str]:
    """The corrected marker of each row: significant after its family's correction or not, or
    not tested (too few users, or no p-value)."""
    low_power = frame["low_power"] if "low_power" in frame else [False] * len(frame)
    return [
        TOO_FEW_USERS
        if weak is True
        else NOT_TESTED
        if pd.isna(p)
        else SIGNIFICANT
        if flag is True
        else NOT_SIGNIFICANT
        for flag, weak, p in zip(frame["significant"], low_power, frame["p_adjusted"], strict=True)
    ]


def _uncorrected(frame: pd.DataFrame, alpha: float) -> list[str]:
    return [
        NOT_TESTED
        if pd.isna(p)
        else UNCORRECTED_SIGNIFICANT
        if p < alpha
        else UNCORRECTED_NOT_SIGNIFICANT
        for p in frame["p_abs"]
    ]


def _end(value: Any, index: int) -> float | None:
    if isinstance(value, list | tuple) and len(value) == 2:
        return float(value[index])
    return None


def _level(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else f"{value:.1%}"


def forest(results: pd.DataFrame, scale: str, alpha: float) -> tuple[pd.DataFrame, str]:
    """The chart's rows (lift, drawn interval, marker, the other interval for the tooltip) and
    the name of the interval drawn."""
    relative = scale == "relative"
    drawn = results["ci_adjusted"] if relative else results["ci_abs"]
    frame = pd.DataFrame(
        {
            "metric": results["metric"],
            "arm": results["arm"],
            "lift": results["lift_rel" if relative else "lift_abs"],
            "low": [_end(v, 0) for v in drawn],
            "high": [_end(v, 1) for v in drawn],
            "marker": verdicts(results) if relative else _uncorrected(results, alpha),
            "ci_level": [_level(v) for v in results["ci_adjusted_level"]]
            if relative
            else ["95.0%"] * len(results),
            "correction": results["correction"] if relative else "none",
            "p": results["p_adjusted"] if relative else results["p_abs"],
            "ci_95_low": [_end(v, 0) for v in results["ci_rel"]] if relative else None,
            "ci_95_high": [_end(v, 1) for v in results["ci_rel"]] if relative else None,
        }
    ).dropna(subset=["lift"])
    name = "corrected CI (agrees with the marker)" if relative else "95% CI, uncorrected"
    return frame, name


def render_lifts(detail: data.ExperimentDetail) -> None:
    """The forest chart of the overall lifts and their table."""
    st.subheader("Lifts")
    scale = st.radio("Lift", ["relative", "absolute"], horizontal=True, key="lift_scale")
    report = detail.report
    chart_data, interval = forest(detail.results, scale, report.alpha)
    axis = alt.Axis(format="%") if scale == "relative" else alt.Axis()
    markers = [m for m in _COLORS if m in set(chart_data["marker"])]
    tooltip = ["metric", "arm", "marker", "correction", "lift", "low", "high", "ci_level", "p"]
    if scale == "relative":
        tooltip += ["ci_95_low", "ci_95_high"]
    base = alt.Chart(chart_data).encode(y=alt.Y("metric:N", sort=None, title=None))
    chart = (
        base.mark_rule().encode(
            x=alt.X("low:Q", title=f"{scale} lift, {interval}", axis=axis), x2="high:Q"
        )
        + base.mark_point(filled=True, size=60).encode(
            x="lift:Q",
            color=alt.Color(
                "marker:N",
                title="marker",
                scale=alt.Scale(domain=markers, range=[_COLORS[m] for m in markers]),
            ),
            tooltip=tooltip,
        )
        + alt.Chart(pd.DataFrame({"zero": [0.0]})).mark_rule(strokeDash=[3, 3]).encode(x="zero:Q")
    ).properties(height=max(200, 24 * len(chart_data)))
    st.altair_chart(chart, width="stretch")
    if scale == "relative":
        st.caption(
            f"Markers: significance after the correction of each row's family "
            f"({_families(detail)}), alpha {report.alpha:g}. Lines: the corrected CI, rebuilt at "
            "the level (ci_level) where it excludes 0 exactly when the marker says significant; "
            "the tooltip adds the uncorrected 95% CI."
        )
    else:
        st.caption(
            "Corrections are made on relative lifts: here markers and lines are the uncorrected "
            "95% test of the absolute lift. Switch to relative for the corrected decisions."
        )
    table(results_table(detail.results), f"{detail.key} lifts")


def _families(detail: data.ExperimentDetail) -> str:
    """``primary metrics (acceptance_rate): holm; other metrics: bh``, from the rows."""
    rows = detail.results
    primary = rows["metric"].isin(detail.config.primary_metrics)
    parts = []
    for label, chosen in (
        (f"primary metrics ({', '.join(detail.config.primary_metrics)})", rows[primary]),
        ("other metrics", rows[~primary]),
    ):
        methods = sorted({str(m) for m in chosen["correction"].dropna()})
        if methods:
            parts.append(f"{label}: {', '.join(methods)}")
    return "; ".join(parts) or "no tested rows"


def results_table(results: pd.DataFrame) -> pd.DataFrame:
    """The overall results: the corrected decision with its CI first, uncorrected figures after,
    each named for what it is."""
    frame = results.copy()
    frame.insert(3, "verdict", verdicts(results))
    frame = frame.rename(
        columns={
            "ci_rel": "ci_rel_unadjusted",
            "p_rel": "p_rel_unadjusted",
            "ci_abs": "ci_abs_unadjusted",
        }
    )
    return frame[
        [
            "metric",
            "direction",
            "arm",
            "verdict",
            "correction",
            "lift_rel",
            "ci_adjusted",
            "ci_adjusted_level",
            "p_adjusted",
            "control_mean",
            "treatment_mean",
            "ci_rel_unadjusted",
            "p_rel_unadjusted",
            "lift_abs",
            "ci_abs_unadjusted",
            "seq_ci_rel",
            "seq_p_rel",
        ]
    ]


def render_by_language(detail: data.ExperimentDetail) -> None:
    """One metric per language, with the per-language family's corrected decisions."""
    st.subheader("Per language")
    frame = detail.by_language
    if frame.empty:
        st.info("No per-language data yet.")
        return
    metrics = list(dict.fromkeys(frame["metric"]))
    primary = [m for m in detail.config.primary_metrics if m in metrics]
    metric = st.selectbox(
        "Metric", metrics, index=metrics.index(primary[0]) if primary else 0, key="language_metric"
    )
    rows = frame[frame["metric"] == metric]
    shown = pd.DataFrame(
        {
            "language": rows["language"],
            "arm": rows["arm"],
            "verdict": verdicts(rows),
            "correction": rows["correction"],
            "control_n": rows["control_n"],
            "treatment_n": rows["treatment_n"],
            "control_mean": rows["control_mean"],
            "treatment_mean": rows["treatment_mean"],
            "lift_rel": rows["lift_rel"],
            "ci_adjusted": rows["ci_adjusted"],
            "ci_adjusted_level": rows["ci_adjusted_level"],
            "p_adjusted": rows["p_adjusted"],
            "ci_rel_unadjusted": rows["ci_rel"],
            "p_rel_unadjusted": rows["p_rel"],
        }
    )
    st.caption(
        f"Per-language rows form their own families (primary metrics: "
        f"{detail.report.correction}), corrected across every language x metric x arm; "
        f"{SIGNIFICANT} marks p_adjusted < {detail.report.alpha:g}, and ci_adjusted (at "
        "ci_adjusted_level) excludes 0 exactly then. The unadjusted 95% CI and p follow."
    )
    table(shown, f"{detail.key} {metric} per language")
