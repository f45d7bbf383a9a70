"""Experiments: every rollout at a glance, and one experiment's analysis and gate in detail."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import cached, data
from dashboard.context import PageContext
from dashboard.views.widgets import pct, table
from experiments.analysis.gates import SRM_THRESHOLD
from experiments.definitions.config import ConfigError
from experiments.definitions.registry import RegistryError
from experiments.definitions.status import Status

SIGNIFICANT = "✱ significant"
NOT_SIGNIFICANT = "n.s."
# A language with too few effective users per arm: shown, not tested (experiments.analysis.analyze).
TOO_FEW_USERS = "too few users"
_FLASH = "experiments_flash"


def render(context: PageContext) -> None:
    """The experiments page: the list, then the chosen experiment."""
    url = context.database_url
    st.title("Experiments")
    listing = cached.experiments(url)
    if listing.empty:
        st.info("No experiments yet: define one with `codelift experiments apply`.")
        return
    table(listing, "experiments")
    keys = list(listing["experiment"])
    running = [k for k, s in zip(keys, listing["status"], strict=True) if s == "running"]
    key = st.selectbox(
        "Experiment",
        keys,
        index=keys.index(running[0]) if running else 0,
        key="experiment_key",
    )
    if key is None:
        return
    flash = st.session_state.pop(_FLASH, None)
    if flash:
        st.success(flash)
    detail, history = cached.experiment(url, key)
    _header(detail)
    if context.identity.is_admin:
        _admin_controls(context, detail)
    else:
        st.caption("Ramp and pause need the admin role.")
    _allocation(detail)
    _lifts(detail)
    _history(history, key)
    _by_language(detail)
    st.subheader("Guardrails")
    table(_guardrails(detail), f"{key} guardrails")
    st.subheader("Gate decisions")
    table(detail.gates, f"{key} gate decisions")


def _header(detail: data.ExperimentDetail) -> None:
    report = detail.report
    st.header(detail.key)
    if detail.config.description:
        st.caption(detail.config.description)
    columns = st.columns(5)
    columns[0].metric("Status", detail.status)
    columns[1].metric("Coverage", pct(detail.coverage, 0))
    columns[2].metric("Stage", detail.stage)
    columns[3].metric("Users", f"{sum(report.users_per_arm.values()):,}")
    srm = report.srm_p_value
    if srm is None:
        columns[4].metric("SRM", "no data")
    elif srm < SRM_THRESHOLD:
        columns[4].metric(
            "SRM", "mismatch", delta=f"p = {srm:.2g}", delta_color="red", delta_arrow="off"
        )
    else:
        columns[4].metric("SRM", "OK", delta=f"p = {srm:.2g}", delta_color="off", delta_arrow="off")
    latest = detail.gates.head(1)
    if not latest.empty:
        row = latest.iloc[0]
        st.info(
            f"Latest gate decision: **{row['decision']}** "
            f"({row['at']:%Y-%m-%d %H:%M} UTC): {row['reasons']}"
        )


def _admin_controls(context: PageContext, detail: data.ExperimentDetail) -> None:
    status = Status(detail.status)
    columns = st.columns(3)
    target = data.next_stage(detail.config, detail.coverage)
    actor = f"dashboard:{context.identity.name}"
    engine = cached.engine(context.database_url)
    try:
        if status in (Status.RUNNING, Status.PAUSED, Status.DRAFT) and target is not None:
            if columns[0].button(f"Ramp to {pct(target, 0)}", key="ramp", type="primary"):
                data.ramp_experiment(engine, key=detail.key, coverage=target, actor=actor)
                _done(f"{detail.key} ramped to {pct(target, 0)}.")
        if status is Status.RUNNING and columns[1].button("Pause", key="pause"):
            data.set_experiment_status(engine, key=detail.key, status=Status.PAUSED, actor=actor)
            _done(f"{detail.key} paused.")
        if status is Status.PAUSED and columns[1].button("Resume", key="resume"):
            data.set_experiment_status(engine, key=detail.key, status=Status.RUNNING, actor=actor)
            _done(f"{detail.key} resumed.")
    except (RegistryError, ConfigError) as exc:
        st.error(str(exc))


def _done(message: str) -> None:
    cached.clear()
    st.session_state[_FLASH] = message
    st.rerun()


def _allocation(detail: data.ExperimentDetail) -> None:
    st.subheader("Allocation and rollout")
    report = detail.report
    total = sum(report.users_per_arm.values())
    allocation = pd.DataFrame(
        [
            {
                "arm": arm,
                "weight": weight,
                "users": report.users_per_arm.get(arm, 0),
                "observed_share": report.users_per_arm.get(arm, 0) / total if total else None,
            }
            for arm, weight in report.weights.items()
        ]
    )
    left, right = st.columns([1, 2])
    with left:
        table(allocation, f"{detail.key} allocation")
    timeline = detail.timeline.dropna(subset=["coverage"])
    if not timeline.empty:
        stages = pd.DataFrame({"stage": [s.coverage for s in detail.config.rollout.stages]})
        steps = (
            alt.Chart(timeline)
            .mark_line(interpolate="step-after", point=True)
            .encode(
                x=alt.X("at:T", title="when"),
                y=alt.Y("coverage:Q", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
                tooltip=["at:T", "action", "coverage", "status", "actor", "reason"],
            )
        )
        rules = alt.Chart(stages).mark_rule(strokeDash=[4, 4], opacity=0.4).encode(y="stage:Q")
        right.caption("Coverage after every registry change (dashed: the rollout's stages)")
        right.altair_chart(steps + rules, width="stretch")
    with st.expander("Registry changes"):
        table(detail.timeline, f"{detail.key} registry changes")


def _verdicts(significant: pd.Series, low_power: pd.Series | None = None) -> list[str]:
    """The marker of each row: significant after the multiple-comparison correction or not, or
    not tested at all because the slice has too few users."""
    untested = [False] * len(significant) if low_power is None else list(low_power)
    return [
        TOO_FEW_USERS if weak is True else SIGNIFICANT if flag is True else NOT_SIGNIFICANT
        for flag, weak in zip(significant, untested, strict=True)
    ]


def _interval(value: Any, index: int) -> float | None:
    if isinstance(value, list | tuple) and len(value) == 2:
        return float(value[index])
    return None


def _lifts(detail: data.ExperimentDetail) -> None:
    st.subheader("Lifts")
    scale = st.radio("Lift", ["relative", "absolute"], horizontal=True, key="lift_scale")
    suffix = "rel" if scale == "relative" else "abs"
    results = detail.results
    forest = pd.DataFrame(
        {
            "metric": results["metric"],
            "arm": results["arm"],
            "lift": results[f"lift_{suffix}"],
            "low": [_interval(v, 0) for v in results[f"ci_{suffix}"]],
            "high": [_interval(v, 1) for v in results[f"ci_{suffix}"]],
            "significant": [SIGNIFICANT if s else NOT_SIGNIFICANT for s in results["significant"]],
            "p_adjusted": results["p_adjusted"],
        }
    ).dropna(subset=["lift"])
    axis = alt.Axis(format="%") if scale == "relative" else alt.Axis()
    base = alt.Chart(forest).encode(y=alt.Y("metric:N", sort=None, title=None))
    chart = (
        base.mark_rule().encode(
            x=alt.X("low:Q", title=f"{scale} lift, 95% CI", axis=axis), x2="high:Q"
        )
        + base.mark_point(filled=True, size=60).encode(
            x="lift:Q",
            color=alt.Color("significant:N", scale=alt.Scale(range=["#888888", "#d62728"])),
            tooltip=["metric", "arm", "lift", "low", "high", "p_adjusted", "significant"],
        )
        + alt.Chart(pd.DataFrame({"zero": [0.0]})).mark_rule(strokeDash=[3, 3]).encode(x="zero:Q")
    ).properties(height=max(200, 24 * len(forest)))
    st.altair_chart(chart, width="stretch")
    st.caption(
        f"Significance after {detail.report.correction} correction across metrics x arms "
        f"(alpha {detail.report.alpha:g}); primary metrics: "
        f"{', '.join(detail.config.primary_metrics)}."
    )
    shown = results[
        [
            "metric",
            "direction",
            "arm",
            "control_mean",
            "treatment_mean",
            "lift_abs",
            "ci_abs",
            "lift_rel",
            "ci_rel",
            "p_rel",
            "p_adjusted",
            "seq_ci_rel",
            "seq_p_rel",
        ]
    ].copy()
    shown.insert(
        3, "verdict", [SIGNIFICANT if s else NOT_SIGNIFICANT for s in results["significant"]]
    )
    table(shown, f"{detail.key} lifts")


def _history(history: pd.DataFrame, key: str) -> None:
    st.subheader("Sequential CI over time")
    if history.empty:
        st.info("No exposures yet.")
        return
    chart_data = history.dropna(subset=["lift_rel"])
    band = (
        alt.Chart(chart_data)
        .mark_area(opacity=0.25)
        .encode(
            x=alt.X("as_of:T", title="as of (midnight UTC)"),
            y=alt.Y("seq_ci_rel_low:Q", title="relative lift", axis=alt.Axis(format="%")),
            y2="seq_ci_rel_high:Q",
            color="metric:N",
        )
    )
    line = (
        alt.Chart(chart_data)
        .mark_line(point=True)
        .encode(
            x="as_of:T",
            y="lift_rel:Q",
            color="metric:N",
            tooltip=list(chart_data.columns),
        )
    )
    zero = alt.Chart(pd.DataFrame({"zero": [0.0]})).mark_rule(strokeDash=[3, 3]).encode(y="zero:Q")
    st.altair_chart(band + line + zero, width="stretch")
    st.caption("Always-valid (sequential) 95% CI of the primary metrics, as each day ended.")
    table(history, f"{key} sequential history")


def _by_language(detail: data.ExperimentDetail) -> None:
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
            "verdict": _verdicts(rows["significant"], rows.get("low_power")),
            "control_n": rows["control_n"],
            "treatment_n": rows["treatment_n"],
            "control_mean": rows["control_mean"],
            "treatment_mean": rows["treatment_mean"],
            "lift_rel": rows["lift_rel"],
            "ci_rel": rows["ci_rel"],
            "p_rel": rows["p_rel"],
            "p_adjusted": rows["p_adjusted"],
            "ci_adjusted": rows["ci_adjusted"],
        }
    )
    st.caption(
        f"p-values corrected ({detail.report.correction}) across every language x metric x arm; "
        f"{SIGNIFICANT} marks p_adjusted < {detail.report.alpha:g}."
    )
    table(shown, f"{detail.key} {metric} per language")


def _guardrails(detail: data.ExperimentDetail) -> pd.DataFrame:
    frame = detail.guardrails
    if frame.empty:
        return frame
    return pd.DataFrame(
        {
            "metric": frame["metric"],
            "tested_as": frame["tested_as"],
            "arm": frame["arm"],
            "margin": frame["margin"],
            "lift_rel": frame["lift_rel"],
            "bound": frame["bound"],
            "p_value": frame["p_value"],
            "non_inferior": frame["non_inferior"],
        }
    )
