"""Experiments: every rollout at a glance, and one experiment's analysis and gate in detail."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import cached, data
from dashboard.context import PageContext
from dashboard.views.lifts import render_by_language, render_lifts
from dashboard.views.widgets import pct, table
from experiments.analysis.health import SRM_THRESHOLD, HealthCheck, HealthStatus, worst
from experiments.definitions.config import ConfigError
from experiments.definitions.registry import RegistryError
from experiments.definitions.status import Status

_FLASH = "experiments_flash"
# Failing checks in red, warnings in amber (Bootstrap's alert colours: readable as text too).
STATUS_STYLES = {
    "fail": "background-color: #f8d7da; color: #842029",
    "warn": "background-color: #fff3cd; color: #664d03",
}


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
    _power(detail)
    render_lifts(detail)
    _history(history, key)
    render_by_language(detail)
    st.subheader("Guardrails")
    st.caption(
        "bound: the one-sided always-valid bound of the relative lift; non_inferior exactly "
        "when it is inside the margin."
    )
    table(_guardrails(detail), f"{key} guardrails")
    st.subheader("Gate decisions")
    table(detail.gates, f"{key} gate decisions")
    _health(detail)


def _header(detail: data.ExperimentDetail) -> None:
    report = detail.report
    st.header(detail.key)
    if detail.config.description:
        st.caption(detail.config.description)
    columns = st.columns(6)
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
    # The checks as the data stand now; those the gate decided on are shown with its decisions.
    value, delta = health_metric(report.health)
    if delta is None:
        columns[5].metric("Health", value)
    elif delta == HALTS:
        columns[5].metric("Health", value, delta=delta, delta_color="red", delta_arrow="off")
    else:
        columns[5].metric("Health", value, delta=delta, delta_color="orange", delta_arrow="off")
    latest = detail.gates.head(1)
    if not latest.empty:
        row = latest.iloc[0]
        health = f" Health checks: {row['health']}." if row["health"] != "-" else ""
        st.info(
            f"Latest gate decision: **{row['decision']}** "
            f"({row['at']:%Y-%m-%d %H:%M} UTC): {row['reasons']}.{health}"
        )


HALTS = "halts the rollout"


def health_metric(checks: Sequence[HealthCheck]) -> tuple[str, str | None]:
    """The header's health figure and its note: failing checks, else warnings, else OK."""
    status = worst(checks)
    count = sum(1 for check in checks if check.status is status)
    if status is HealthStatus.FAIL:
        return f"{count} failing", HALTS
    if status is HealthStatus.WARN:
        return f"{count} warning{'s' if count > 1 else ''}", "read with care"
    return ("OK" if checks else "no checks"), None


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


def _power(detail: data.ExperimentDetail) -> None:
    st.subheader("Progress to power")
    if detail.power.empty:
        st.info("No primary metric to plan for.")
        return
    plan = detail.config.plan
    st.caption(
        f"Power reached so far to detect a {pct(plan.mde, 0)} relative effect on each primary "
        f"metric (target {pct(plan.power, 0)}), from the standard errors observed now; "
        "`codelift plan` gives the days still needed."
    )
    for row in detail.power.itertuples():
        if row.power is None or row.power != row.power:  # None or NaN: no standard error yet
            st.progress(0.0, text=f"{row.metric}: no estimate yet ({row.users:,} users)")
            continue
        reached = min(1.0, float(row.power) / float(row.target_power))
        st.progress(
            reached,
            text=f"{row.metric}: power {pct(float(row.power), 0)} of the "
            f"{pct(float(row.target_power), 0)} wanted ({row.users:,} users)",
        )


def _guardrails(detail: data.ExperimentDetail) -> pd.DataFrame:
    frame = detail.guardrails
    if frame.empty:
        return frame
    columns = ["metric", "arm", "margin", "lift_rel", "bound", "p_value", "non_inferior"]
    return frame[columns]


def _health(detail: data.ExperimentDetail) -> None:
    st.subheader("Health checks")
    if detail.health.empty:
        st.info("No health checks yet.")
        return
    if detail.health_at is not None:
        source = f"Stored with the gate decision of {detail.health_at:%Y-%m-%d %H:%M} UTC"
    else:
        source = "Computed now (no gate decision has stored any yet)"
    st.caption(
        f"{source}. A failing check halts the rollout; warnings are listed with every decision."
    )
    table(detail.health, f"{detail.key} health checks", style=_status_colors)


def _status_colors(frame: pd.DataFrame) -> Any:
    """Whole rows coloured by their status."""
    return frame.style.apply(lambda row: [STATUS_STYLES.get(row["status"], "")] * len(row), axis=1)
