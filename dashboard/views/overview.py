"""Overview for product managers: is the assistant helping, over time and per language."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from dashboard import cached
from dashboard.context import PageContext
from dashboard.views.widgets import ms, pct, table
from experiments.analysis.contributions import CHECKPOINTS
from experiments.product.metrics import GRAINS

DEFAULT_DAYS = 14
RATES = {
    "acceptance_rate": "Acceptance rate",
    "pct_code_written": "% code written",
    **{f"cpr_{t}": f"CPR@{t}s" for t in CHECKPOINTS},
}


def render(context: PageContext) -> None:
    """The overview page."""
    url = context.database_url
    st.title("Overview")
    options = cached.filter_options(url)
    if options.first_day is None or options.last_day is None:
        st.info("No rolled-up events yet: run `codelift db rollup` after events arrive.")
        return
    default_first = max(options.first_day, options.last_day - dt.timedelta(days=DEFAULT_DAYS))
    columns = st.columns([2, 1, 2, 2])
    picked = columns[0].date_input(
        "Date range",
        value=(default_first, options.last_day),
        min_value=options.first_day,
        max_value=options.last_day,
        key="overview_range",
    )
    grain = columns[1].radio("Grain", GRAINS, horizontal=True, key="overview_grain")
    languages = columns[2].multiselect(
        "Languages", options.languages, key="overview_languages", placeholder="All"
    )
    ides = columns[3].multiselect("IDEs", options.ides, key="overview_ides", placeholder="All")
    if not isinstance(picked, tuple) or len(picked) != 2:
        st.info("Pick the last day of the range.")
        return
    first, last = picked
    chosen = (tuple(languages), tuple(ides))
    frames = cached.overview(url, first, last, grain, *chosen)
    totals, series, per_language = frames.total, frames.series, frames.by_language
    if totals.empty:
        st.info("No events in this range for these filters.")
        return
    _kpis(totals.iloc[0])
    as_of = cached.rollups_as_of(url)
    if as_of is not None and not ides:
        st.caption(f"From rollups refreshed up to {as_of:%Y-%m-%d %H:%M} UTC.")

    st.subheader("Over time")
    series = series.set_index("period")
    left, right = st.columns(2)
    left.caption("Acceptance, code written and persistence (CPR)")
    left.line_chart(series[list(RATES)].rename(columns=RATES))
    right.caption("Active users and suggestions shown")
    right.line_chart(series[["active_users", "suggestions_shown"]])
    left, right = st.columns(2)
    left.caption("Latency p50 / p95 (ms)")
    left.line_chart(series[["latency_p50_ms", "latency_p95_ms"]])
    right.caption("Error rate")
    right.line_chart(series[["error_rate"]])
    table(series.reset_index().drop(columns=["language"]), f"overview by {grain}")

    st.subheader("Per language")
    table(_language_table(per_language), "overview per language")


def _kpis(row: pd.Series) -> None:
    first = st.columns(4)
    first[0].metric("Acceptance rate", pct(row["acceptance_rate"]))
    first[1].metric("% code written", pct(row["pct_code_written"]))
    first[2].metric("Active users", f"{int(row['active_users']):,}")
    first[3].metric("Suggestions shown", f"{int(row['suggestions_shown']):,}")
    second = st.columns(len(CHECKPOINTS) + 2)
    for column, t in zip(second, CHECKPOINTS, strict=False):
        column.metric(f"CPR@{t}s", pct(row[f"cpr_{t}"]))
    second[-2].metric("Latency p50", ms(row["latency_p50_ms"]))
    second[-1].metric("Latency p95", ms(row["latency_p95_ms"]))


def _language_table(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["period"]).sort_values("suggestions_shown", ascending=False)
