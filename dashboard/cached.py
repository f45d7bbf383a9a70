"""The data layer behind Streamlit's caches: one engine per database, query results for a TTL.

Arguments are plain values (the database URL, dates, tuples) so Streamlit can hash them.
Writes (ramp, pause, tag corrections) clear the caches so the next run shows them.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st
from sqlalchemy import Engine

from core.db.connection import make_engine
from dashboard import data, feedback_data
from experiments.product.metrics import Grain
from experiments.product.serving_health import ServingGrain

# Figures may be this old: rollups refresh periodically anyway, and 1 minute keeps pages fast.
CACHE_TTL_S = 60


@st.cache_resource(show_spinner=False)
def engine(url: str) -> Engine:
    """The database engine, shared by every session of the server."""
    return make_engine(url, pool_size=4)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def filter_options(url: str) -> data.FilterOptions:
    """Languages, IDEs and days there are data for."""
    return data.filter_options(engine(url))


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def rollups_as_of(url: str) -> dt.datetime | None:
    """The rollups' watermark."""
    return data.rollups_as_of(engine(url))


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def overview(
    url: str,
    first: dt.date,
    last: dt.date,
    grain: Grain,
    languages: tuple[str, ...],
    ides: tuple[str, ...],
) -> data.OverviewFrames:
    """Product metrics of the range, per period and per language."""
    return data.overview_frames(
        engine(url), first=first, last=last, grain=grain, languages=languages, ides=ides
    )


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def experiments(url: str) -> pd.DataFrame:
    """Every experiment with its stage and latest gate decision."""
    return data.experiments_frame(engine(url))


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def experiment(url: str, key: str) -> tuple[data.ExperimentDetail, pd.DataFrame]:
    """One experiment's analysis, gates and timeline, and its sequential CI day by day."""
    return data.experiment_with_history(engine(url), key)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def serving(
    url: str, key: str, start: dt.datetime, end: dt.datetime, grain: ServingGrain
) -> pd.DataFrame:
    """Requests, errors and latency per arm."""
    return data.serving_frame(engine(url), key=key, start=start, end=end, grain=grain)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def themes(url: str) -> dict[str, str]:
    """Active codebook themes."""
    return feedback_data.theme_choices(engine(url))


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def feedback_counts(
    url: str, experiment_key: str | None, start: dt.datetime, end: dt.datetime
) -> dict[str, pd.DataFrame]:
    """Theme and polarity counts."""
    return feedback_data.feedback_counts(
        engine(url), experiment_key=experiment_key, start=start, end=end
    )


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def comments(
    url: str,
    text_query: str,
    theme_ids: tuple[str, ...],
    polarity: str | None,
    language: str | None,
    experiment_key: str | None,
    needs_review: bool | None = None,
    max_confidence: float | None = None,
) -> pd.DataFrame:
    """Comments matching the filters."""
    return feedback_data.comments_frame(
        engine(url),
        text_query=text_query,
        theme_ids=theme_ids,
        polarity=polarity,
        language=language,
        experiment_key=experiment_key,
        needs_review=needs_review,
        max_confidence=max_confidence,
    )


def clear() -> None:
    """Forget every cached result (after a write)."""
    st.cache_data.clear()
