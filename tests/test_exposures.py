"""Exposures: recorded once per user and experiment, across recorders, without blocking."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from collector.models import ExposureRow
from core.db.connection import libpq_conninfo, make_engine
from experiments.assignment.exposures import (
    GATEWAY_SESSION,
    ExposureRecorder,
    codelift_version,
    exposure_id,
)
from experiments.assignment.service import ArmAssignment, AssignmentRequest, AssignmentService
from tests.database import EVENT_TABLES, PgConnection, server_url
from tests.experiment_factories import DEFAULT_VARIANT, CommittedRegistry, definition

USERS = [f"user-{number:04d}" for number in range(300)]
FAST = 0.02  # seconds between the writer's looks at an empty queue


@pytest.fixture
def recorder(engine: Engine, registry: CommittedRegistry) -> Iterator[ExposureRecorder]:
    recorder = ExposureRecorder(engine, flush_interval_s=FAST)
    yield recorder
    recorder.stop()


def request(user_id: str, **fields: str) -> AssignmentRequest:
    return AssignmentRequest(
        user_id=user_id,
        language=fields.get("language", "python"),
        org=fields.get("org", "acme"),
        ide=fields.get("ide", "vscode"),
        session_id=fields.get("session_id"),
        plugin_version=fields.get("plugin_version"),
    )


def exposures(pg: PgConnection) -> dict[tuple[str, str], str]:
    """(experiment, user) -> arm of every stored exposure; fails on a duplicate."""
    found: dict[tuple[str, str], str] = {}
    for row in pg.execute("SELECT experiment, user_id, arm FROM exposure").fetchall():
        pair = (row["experiment"], row["user_id"])
        assert pair not in found, f"exposure recorded twice: {pair}"
        found[pair] = row["arm"]
    return found


def test_an_exposure_is_recorded_once_however_often_a_user_is_served(
    registry: CommittedRegistry, engine: Engine, recorder: ExposureRecorder, pg: PgConnection
) -> None:
    registry.apply(definition("exp-a", layer="a", coverage=0.5))
    registry.apply(definition("exp-b", layer="b"))
    service = AssignmentService(engine, DEFAULT_VARIANT, exposure_recorder=recorder)
    service.refresh()
    recorder.start()
    served: dict[tuple[str, str], str] = {}
    for _ in range(5):
        for user in USERS:
            for ide in ("vscode", "intellij"):
                for arm in service.assign(request(user, ide=ide)).arms:
                    served[(arm.experiment, user)] = arm.arm
    # A ramp makes a new snapshot and an empty cache: users are offered again, not recorded again.
    registry.ramp("exp-a", 1.0)
    assert service.refresh()
    for user in USERS:
        for arm in service.assign(request(user)).arms:
            served[(arm.experiment, user)] = arm.arm
    assert recorder.flush()

    assert exposures(pg) == served
    assert recorder.counts().queued == len(served)
    assert recorder.counts().written == len(served)
    assert recorder.dropped == 0
    assert sum(experiment == "exp-a" for experiment, _ in served) == len(USERS)


def test_two_recorders_write_each_exposure_once(
    registry: CommittedRegistry, engine: Engine, pg: PgConnection
) -> None:
    registry.apply(definition("shared"))
    # Two gateway processes (or one restarted): separate seen-sets, the same event ids.
    recorders = [ExposureRecorder(engine, flush_interval_s=FAST) for _ in range(2)]
    try:
        for recorder in recorders:
            service = AssignmentService(engine, DEFAULT_VARIANT, exposure_recorder=recorder)
            service.refresh()
            recorder.start()
            for user in USERS:
                service.assign(request(user))
            assert recorder.flush()
            assert recorder.counts().written == len(USERS)
    finally:
        for recorder in recorders:
            recorder.stop()
    stored = exposures(pg)
    assert len(stored) == len(USERS)
    ids = pg.execute("SELECT event_id, experiment, user_id FROM exposure").fetchall()
    assert all(row["event_id"] == exposure_id(row["experiment"], row["user_id"]) for row in ids)


def test_exposure_rows_carry_the_request_or_the_gateway_defaults(
    registry: CommittedRegistry, recorder: ExposureRecorder, pg: PgConnection
) -> None:
    registry.keys.update({"exp-rows"})
    arms = (ArmAssignment(experiment="exp-rows", arm="treatment", layer="default"),)
    before = dt.datetime.now(dt.UTC)
    recorder.offer(request("plain", language="go", ide="neovim"), arms)
    recorder.offer(request("full", session_id="s-42", plugin_version="1.4.2"), arms)
    after = dt.datetime.now(dt.UTC)
    recorder.start()
    assert recorder.flush()

    rows = {
        row["user_id"]: row
        for row in pg.execute("SELECT * FROM exposure WHERE experiment = 'exp-rows'").fetchall()
    }
    plain, full = rows["plain"], rows["full"]
    assert (plain["session_id"], plain["plugin_version"]) == (GATEWAY_SESSION, codelift_version())
    assert (plain["language"], plain["ide"], plain["arm"]) == ("go", "neovim", "treatment")
    assert (full["session_id"], full["plugin_version"]) == ("s-42", "1.4.2")
    assert before <= plain["client_ts"] <= after <= plain["received_at"]
    assert plain["schema_version"] == 1 and plain["suggestion_id"] is None


def test_a_full_queue_drops_and_counts_without_blocking(
    registry: CommittedRegistry, engine: Engine, pg: PgConnection
) -> None:
    registry.keys.update({"exp-full"})
    arms = (ArmAssignment(experiment="exp-full", arm="control", layer="default"),)
    recorder = ExposureRecorder(engine, queue_size=10, flush_interval_s=FAST)
    try:
        started = time.perf_counter()
        for user in USERS[:100]:
            recorder.offer(request(user), arms)
        assert time.perf_counter() - started < 0.5
        assert (recorder.counts().queued, recorder.dropped) == (10, 90)

        recorder.start()
        assert recorder.flush()
        assert len(exposures(pg)) == 10
        # A dropped exposure was not marked seen: offered again, it is recorded.
        recorder.offer(request(USERS[50]), arms)
        assert recorder.flush()
        assert ("exp-full", USERS[50]) in exposures(pg)
    finally:
        recorder.stop()


def test_the_writer_retries_until_the_database_is_back(pg: PgConnection) -> None:
    # A database that does not exist yet stands in for one that is down.
    name = f"codelift_test_{secrets.token_hex(6)}"
    url = make_url(server_url()).set(database=name).render_as_string(hide_password=False)
    admin = libpq_conninfo(server_url())
    recorder = ExposureRecorder(url, flush_interval_s=FAST)
    try:
        recorder.start()
        arms = (ArmAssignment(experiment="exp-retry", arm="control", layer="default"),)
        recorder.offer(request("user-1"), arms)
        deadline = time.monotonic() + 5
        while recorder.counts().errors == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert recorder.counts().errors >= 1
        assert recorder.counts().written == 0

        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        engine = make_engine(url)
        # The store's one statement names every event table (and the id table).
        tables = ExposureRow.metadata.tables
        ExposureRow.metadata.create_all(
            engine, tables=[tables[name] for name in (*EVENT_TABLES, "event_ids")]
        )
        engine.dispose()

        assert recorder.flush(timeout_s=10)
        assert recorder.counts().written == 1
    finally:
        recorder.stop()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def test_exposures_still_queued_at_shutdown_are_given_up_after_a_few_attempts() -> None:
    recorder = ExposureRecorder("postgresql://postgres@127.0.0.1:1/none", flush_interval_s=FAST)
    recorder.start()
    arms = (ArmAssignment(experiment="exp-gone", arm="control", layer="default"),)
    recorder.offer(request("user-1"), arms)
    started = time.monotonic()
    recorder.stop(timeout_s=5)
    assert time.monotonic() - started < 5
    assert recorder.counts().failed == 1


def test_an_exposure_the_collector_would_reject_is_counted_and_not_stored(
    registry: CommittedRegistry, recorder: ExposureRecorder, pg: PgConnection
) -> None:
    # The same schemas and time window as the collector: an IDE name over 64 characters and a
    # first-served time older than the accepted window are both rejected, the rest stored.
    registry.keys.update({"exp-valid"})
    arms = (ArmAssignment(experiment="exp-valid", arm="control", layer="default"),)
    week_ago = time.time() - 8 * 86_400
    recorder.offer(request("long-ide", ide="x" * 65), arms)
    recorder.offer(
        AssignmentRequest(
            user_id="stale", language="go", org="acme", ide="vim", served_at=week_ago
        ),
        arms,
    )
    recorder.offer(request("fine"), arms)
    recorder.start()
    assert recorder.flush()

    counts = recorder.counts()
    assert (counts.queued, counts.rejected, counts.written) == (3, 2, 1)
    assert set(exposures(pg)) == {("exp-valid", "fine")}
