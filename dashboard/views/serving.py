"""Serving: requests, errors and latency of each experiment arm over time."""

from __future__ import annotations

import datetime as dt

import streamlit as st

from dashboard import cached
from dashboard.context import PageContext
from dashboard.views.widgets import table
from experiments.product.serving_health import SERVING_GRAINS

DEFAULT_DAYS = 7


def render(context: PageContext) -> None:
    """The serving page."""
    url = context.database_url
    st.title("Serving")
    listing = cached.experiments(url)
    if listing.empty:
        st.info("No experiments yet: serving figures are split by experiment arm.")
        return
    keys = list(listing["experiment"])
    columns = st.columns([2, 1, 1])
    key = columns[0].selectbox("Experiment", keys, key="serving_experiment")
    grain = columns[1].radio("Grain", SERVING_GRAINS, horizontal=True, index=1, key="serving_grain")
    days = columns[2].number_input("Days", 1, 90, DEFAULT_DAYS, key="serving_days")
    end = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    start = end - dt.timedelta(days=int(days))
    frame = cached.serving(url, key, start, end, grain)
    if frame.empty:
        st.info(f"No request of {key} was served in the last {days} days.")
        return
    totals = frame.groupby("arm")[["requests", "errors"]].sum()
    kpis = st.columns(len(totals))
    for column, (arm, row) in zip(kpis, totals.iterrows(), strict=True):
        column.metric(
            f"{arm}: requests",
            f"{int(row['requests']):,}",
            f"{int(row['errors'])} errors",
            delta_color="off",
            delta_arrow="off",
        )
    for title, value in (
        ("Requests", "requests"),
        ("Error rate", "error_rate"),
        ("Latency p50 (ms)", "latency_p50_ms"),
        ("Latency p95 (ms)", "latency_p95_ms"),
    ):
        st.caption(f"{title} per arm")
        st.line_chart(frame, x="period", y=value, color="arm")
    table(frame, f"serving {key} by {grain}")
