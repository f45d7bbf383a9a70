"""Duplicate, late and conflicting exposures: the first exposure per (experiment, user) wins.

Clients log an exposure per session and retry, so the exposure table holds many rows per user.
Every analysis must equal the one without duplicates, from raw events and from rollups alike,
whatever order the duplicates arrive in; a user exposed to two arms is left out and counted.
"""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import Connection, text

from experiments.analysis.metrics_sql import ExperimentData, load_experiment_data
from experiments.analysis.rollups import refresh_rollups
from simulator.synthetic import SyntheticConfig, load_synthetic

EXPERIMENT = "synthetic"


@pytest.fixture
def synthetic(conn: Connection) -> Connection:
    """400 users over 5 days (the last 4 exposed), rolled up."""
    driver = conn.connection.driver_connection
    assert driver is not None
    load_synthetic(
        driver,
        SyntheticConfig(experiment=EXPERIMENT, users=400, events=14_000, days=5.0, pre_days=1.0),
    )
    refresh_rollups(conn)
    return conn


def both(conn: Connection, *, cuped: bool = False) -> tuple[ExperimentData, ExperimentData]:
    """Raw and rollup analyses (the rollups refreshed first, as the CLI does)."""
    refresh_rollups(conn)
    return tuple(  # type: ignore[return-value]
        load_experiment_data(
            conn, experiment=EXPERIMENT, source=source, by_language=True, cuped=cuped
        )
        for source in ("raw", "rollups")
    )


def assert_same(a: ExperimentData, b: ExperimentData) -> None:
    assert a.users_per_arm == b.users_per_arm
    assert a.first_exposure == b.first_exposure
    assert a.multiple_arm_users == b.multiple_arm_users
    assert [(m.metric, m.arm, m.language) for m in a.metrics] == [
        (m.metric, m.arm, m.language) for m in b.metrics
    ]
    for x, y in zip(a.metrics, b.metrics, strict=True):
        assert dataclasses.astuple(x.moments) == pytest.approx(
            dataclasses.astuple(y.moments), rel=1e-12
        ), (x.metric, x.arm, x.language)
    assert [(q.metric, q.arm, q.language, dict(q.histogram)) for q in a.quantiles] == [
        (q.metric, q.arm, q.language, dict(q.histogram)) for q in b.quantiles
    ]


def duplicate(conn: Connection, *, users: int, shift: str, arm: str = "same") -> list[str]:
    """Re-post the exposure of ``users`` users, ``shift`` later (negative: earlier), in their
    own arm or (arm="other") in another one; returns the users."""
    chosen = list(
        conn.execute(
            text(
                "SELECT user_id FROM exposure WHERE experiment = :e ORDER BY md5(user_id) LIMIT :n"
            ),
            {"e": EXPERIMENT, "n": users},
        ).scalars()
    )
    new_arm = (
        "arm"
        if arm == "same"
        else ("CASE WHEN arm = 'control' THEN 'treatment' ELSE 'control' END")
    )
    conn.execute(
        text(f"""
INSERT INTO exposure (event_id, client_ts, received_at, schema_version, user_id, session_id, ide,
                      plugin_version, language, experiment, arm, suggestion_id)
SELECT gen_random_uuid(), client_ts + CAST(:shift AS interval), now(), schema_version, user_id,
       session_id || '-again', ide, plugin_version, language, experiment, {new_arm}, NULL
FROM exposure WHERE experiment = :e AND user_id = ANY(:users)
"""),
        {"e": EXPERIMENT, "users": chosen, "shift": shift},
    )
    return chosen


@pytest.mark.parametrize("cuped", [False, True])
def test_later_duplicates_change_nothing(synthetic: Connection, cuped: bool) -> None:
    raw, rollups = both(synthetic, cuped=cuped)
    assert_same(raw, rollups)
    duplicate(synthetic, users=20, shift="1 day")
    duplicate(synthetic, users=5, shift="3 hours")
    again_raw, again_rollups = both(synthetic, cuped=cuped)
    assert_same(again_raw, raw)
    assert_same(again_rollups, rollups)
    assert sum(again_raw.users_per_arm.values()) == sum(raw.users_per_arm.values())


def test_an_earlier_exposure_arriving_late_resplits_the_user(synthetic: Connection) -> None:
    # What the analysis should be: those users' only exposure two hours earlier.
    moved = synthetic.begin_nested()
    chosen = list(
        synthetic.execute(
            text(
                "SELECT user_id FROM exposure WHERE experiment = :e ORDER BY md5(user_id) LIMIT 15"
            ),
            {"e": EXPERIMENT},
        ).scalars()
    )
    synthetic.execute(
        text(
            "UPDATE exposure SET client_ts = client_ts - interval '2 hours' "
            "WHERE experiment = :e AND user_id = ANY(:u)"
        ),
        {"e": EXPERIMENT, "u": chosen},
    )
    expected, _ = both(synthetic)
    moved.rollback()
    before, _ = both(synthetic)
    # The earlier exposure arrives after the rollups were built from the later one.
    assert duplicate(synthetic, users=15, shift="-2 hours") == chosen
    raw, rollups = both(synthetic)
    assert_same(raw, rollups)
    assert_same(raw, expected)
    assert raw.get("acceptance_rate", "control") != before.get("acceptance_rate", "control") or (
        raw.get("acceptance_rate", "treatment") != before.get("acceptance_rate", "treatment")
    )


def test_users_exposed_to_two_arms_are_left_out_and_counted(synthetic: Connection) -> None:
    raw, _ = both(synthetic)
    conflicted = duplicate(synthetic, users=8, shift="1 hour", arm="other")
    after_raw, after_rollups = both(synthetic)
    assert_same(after_raw, after_rollups)
    assert after_raw.multiple_arm_users == len(conflicted)
    assert sum(after_raw.users_per_arm.values()) == sum(raw.users_per_arm.values()) - 8
    # Whoever is left is analysed as before: the conflicted users' rows are simply gone.
    remaining = synthetic.begin_nested()
    synthetic.execute(
        text("DELETE FROM exposure WHERE experiment = :e AND user_id = ANY(:u)"),
        {"e": EXPERIMENT, "u": conflicted},
    )
    without, _ = both(synthetic)
    remaining.rollback()
    assert_same(
        dataclasses.replace(after_raw, multiple_arm_users=0),
        dataclasses.replace(without, multiple_arm_users=0),
    )
