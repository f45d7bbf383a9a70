"""Rollups give exactly what raw events give; refreshing is idempotent and incremental."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import Connection, insert, text

from collector.models import SuggestionOutcomeRow, SuggestionShownRow
from experiments.analysis.metrics_sql import ExperimentData, load_experiment_data
from experiments.analysis.rollups import refresh_rollups
from simulator.synthetic import SyntheticConfig, load_synthetic

EXPERIMENT = "synthetic"


def load_into(conn: Connection, **options: Any) -> None:
    driver = conn.connection.driver_connection
    assert driver is not None
    config = SyntheticConfig(
        experiment=EXPERIMENT, users=300, events=12_000, days=5.0, pre_days=1.0
    )
    load_synthetic(driver, dataclasses.replace(config, **options))


@pytest.fixture
def synthetic(conn: Connection) -> Connection:
    """Synthetic data: 300 users, ~12,000 events over 5 days (the last 4 exposed), 20% with
    two languages."""
    load_into(conn)
    return conn


def analyze(conn: Connection, source: str, **options: Any) -> ExperimentData:
    return load_experiment_data(
        conn,
        experiment=EXPERIMENT,
        source=source,  # type: ignore[arg-type]
        by_language=True,
        **options,
    )


def assert_same_quantiles(a: ExperimentData, b: ExperimentData) -> None:
    assert [(q.metric, q.arm, q.language, dict(q.histogram)) for q in a.quantiles] == [
        (q.metric, q.arm, q.language, dict(q.histogram)) for q in b.quantiles
    ]
    for x, y in zip(a.quantiles, b.quantiles, strict=True):
        # The share below the quantile's edge is a float sum, added in another order.
        assert dataclasses.astuple(x.at_quantile) == pytest.approx(
            dataclasses.astuple(y.at_quantile), rel=1e-12
        )


def assert_same_moments(raw: ExperimentData, rollups: ExperimentData) -> None:
    assert raw.users_per_arm == rollups.users_per_arm
    assert raw.first_exposure == rollups.first_exposure
    assert raw.last_event == rollups.last_event
    assert [(m.metric, m.arm, m.language) for m in raw.metrics] == [
        (m.metric, m.arm, m.language) for m in rollups.metrics
    ]
    for a, b in zip(raw.metrics, rollups.metrics, strict=True):
        assert type(a.moments) is type(b.moments)
        # Integer sums are exact; latency sums are doubles added in another order.
        assert dataclasses.astuple(a.moments) == pytest.approx(
            dataclasses.astuple(b.moments), rel=1e-12
        ), (a.metric, a.arm, a.language)


@pytest.mark.parametrize("cuped", [False, True])
def test_rollups_equal_raw_for_every_metric(synthetic: Connection, cuped: bool) -> None:
    refreshed = refresh_rollups(synthetic)
    raw = analyze(synthetic, "raw", cuped=cuped, pre_period_days=2)
    rollups = analyze(synthetic, "rollups", cuped=cuped, pre_period_days=2)
    assert (raw.rollups_as_of, rollups.rollups_as_of) == (None, refreshed.watermark)
    assert sum(raw.users_per_arm.values()) > 250
    assert raw.get("acceptance_rate", "treatment").n > 100
    assert_same_moments(raw, rollups)
    # Latency quantiles: both sources build the same per-user histograms.
    assert_same_quantiles(raw, rollups)


def test_refresh_is_idempotent(synthetic: Connection) -> None:
    def table() -> list[tuple[Any, ...]]:
        daily = "SELECT * FROM metric_rollup_daily ORDER BY day, user_id, language"
        exposure_day = (
            "SELECT * FROM exposure_day_rollup ORDER BY experiment, user_id, post, language"
        )
        rows = [*synthetic.execute(text(daily)).all(), *synthetic.execute(text(exposure_day)).all()]
        # Latency sums are doubles, added in whatever order the plan gives.
        return [tuple(round(v, 6) if isinstance(v, float) else v for v in row) for row in rows]

    first = refresh_rollups(synthetic)
    before = table()
    again = refresh_rollups(synthetic, days=(first.first_day, first.last_day))  # type: ignore[arg-type]
    assert again.daily_rows == first.daily_rows > 0
    assert table() == before
    # A periodic refresh redoes only the last days (the lookback) and changes nothing either.
    periodic = refresh_rollups(synthetic, lookback_days=1)
    assert periodic.first_day is not None and first.first_day is not None
    assert periodic.first_day > first.first_day
    assert table() == before


def _late_acceptance(conn: Connection, day_ago: int) -> tuple[str, str]:
    """A suggestion shown and accepted ``day_ago`` days ago, arriving now, for an exposed
    control user after their exposure; returns (user_id, its language)."""
    user, language, exposed = conn.execute(
        text(
            "SELECT user_id, language, client_ts FROM exposure "
            "WHERE experiment = :e AND arm = 'control' ORDER BY client_ts LIMIT 1"
        ),
        {"e": EXPERIMENT},
    ).one()
    ts = dt.datetime.now(dt.UTC).replace(hour=1, minute=0) - dt.timedelta(days=day_ago)
    assert ts > exposed
    common = {
        "client_ts": ts,
        "received_at": dt.datetime.now(dt.UTC),
        "schema_version": 1,
        "user_id": user,
        "session_id": "late",
        "ide": "vscode",
        "plugin_version": "1.0",
        "language": language,
        "suggestion_id": f"late-{day_ago}",
    }
    conn.execute(
        insert(SuggestionShownRow),
        [
            common
            | {
                "event_id": uuid.uuid4(),
                "display_ms": 5000.0,
                "chars": 1000,
                "lines": 1,
                "multiline": False,
                "trigger": "auto",
            }
        ],
    )
    conn.execute(
        insert(SuggestionOutcomeRow),
        [
            common
            | {
                "event_id": uuid.uuid4(),
                "outcome": "accepted",
                "accepted_chars": 1000,
                "accepted_lines": 1,
            }
        ],
    )
    return user, language


def test_late_event_is_picked_up_within_the_lookback(synthetic: Connection) -> None:
    refresh_rollups(synthetic)
    before = analyze(synthetic, "rollups").get("acceptance_rate_chars", "control")
    _late_acceptance(synthetic, day_ago=1)
    # Not yet refreshed: the rollups still give the old figures.
    assert analyze(synthetic, "rollups").get("acceptance_rate_chars", "control") == before
    refreshed = refresh_rollups(synthetic, lookback_days=2)
    assert refreshed.first_day == dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)
    after = analyze(synthetic, "rollups").get("acceptance_rate_chars", "control")
    assert after.m_sum == before.m_sum + 1000  # type: ignore[union-attr]
    assert_same_moments(analyze(synthetic, "raw"), analyze(synthetic, "rollups"))


def test_event_older_than_the_lookback_needs_an_explicit_refresh(synthetic: Connection) -> None:
    refresh_rollups(synthetic)
    _late_acceptance(synthetic, day_ago=3)
    refresh_rollups(synthetic, lookback_days=1)
    raw = analyze(synthetic, "raw").get("acceptance_rate_chars", "control")
    assert analyze(synthetic, "rollups").get("acceptance_rate_chars", "control") != raw
    today = dt.datetime.now(dt.UTC).date()
    refresh_rollups(synthetic, days=(today - dt.timedelta(days=3), today))
    assert analyze(synthetic, "rollups").get("acceptance_rate_chars", "control") == raw


def test_languages_add_up_to_the_whole_when_each_user_has_one(conn: Connection) -> None:
    load_into(conn, second_language_share=0.0)
    refresh_rollups(conn)
    data = analyze(conn, "rollups")
    for stats in data.metrics:
        if stats.language is not None:
            continue
        parts = [
            dataclasses.astuple(m.moments)
            for m in data.metrics
            if (m.metric, m.arm) == (stats.metric, stats.arm) and m.language is not None
        ]
        total = [sum(column) for column in zip(*parts, strict=True)]
        assert total == pytest.approx(list(dataclasses.astuple(stats.moments)), rel=1e-12)


def test_refresh_of_an_empty_range_writes_nothing(conn: Connection) -> None:
    today = dt.datetime.now(dt.UTC).date()
    result = refresh_rollups(conn, days=(today + dt.timedelta(days=1), today))
    assert (result.daily_rows, result.exposure_day_rows) == (0, 0)


@pytest.mark.parametrize("source", ["raw", "rollups"])
def test_overall_rows_do_not_depend_on_by_language(synthetic: Connection, source: str) -> None:
    refresh_rollups(synthetic)
    split = load_experiment_data(
        synthetic,
        experiment=EXPERIMENT,
        source=source,  # type: ignore[arg-type]
        by_language=True,
    )
    whole = load_experiment_data(
        synthetic,
        experiment=EXPERIMENT,
        source=source,  # type: ignore[arg-type]
    )
    overall = [m for m in split.metrics if m.language is None]
    assert [(m.metric, m.arm) for m in overall] == [(m.metric, m.arm) for m in whole.metrics]
    for a, b in zip(overall, whole.metrics, strict=True):
        assert dataclasses.astuple(a.moments) == pytest.approx(
            dataclasses.astuple(b.moments), rel=1e-12
        )
    assert_same_quantiles(
        dataclasses.replace(split, quantiles=[q for q in split.quantiles if q.language is None]),
        whole,
    )
