"""Daily partitions: the pure plan, maintenance against PostgreSQL, and the collector's
fallback when an insert finds no partition."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from psycopg import sql

from collector.partitions import (
    PartitionPlan,
    maintain_for_settings,
    maintain_partitions,
    partition_name,
    partitioned_tables,
    plan_partitions,
)
from core.db.connection import libpq_conninfo
from migrations.models import load_all_models
from tests import factories
from tests.database import (
    PARTITIONED_TABLES,
    PgConnection,
    database_settings,
    drop_partition,
    partition_days,
    row_by_id,
    table_exists,
    utc_today,
)
from tests.factories import iso, now_utc

D = dt.date(2026, 3, 10)


def day(offset: int) -> dt.date:
    return D + dt.timedelta(days=offset)


def days(first: int, last: int) -> list[dt.date]:
    return [day(n) for n in range(first, last + 1)]


# --- the plan (pure) ---------------------------------------------------------------------


def test_partition_names_carry_the_day() -> None:
    assert partition_name("suggestion_shown", dt.date(2026, 1, 5)) == "suggestion_shown_p20260105"


def test_the_partitioned_tables_are_the_five_high_volume_ones() -> None:
    assert partitioned_tables(load_all_models()) == sorted(PARTITIONED_TABLES)


def test_plan_creates_every_missing_day_of_every_table() -> None:
    plan = plan_partitions(
        {"b": set(), "a": set()}, first_day=day(0), last_day=day(2), drop_before=None
    )
    assert plan == PartitionPlan(
        create=[("a", d) for d in days(0, 2)] + [("b", d) for d in days(0, 2)], drop=[]
    )


def test_plan_skips_days_that_exist() -> None:
    existing = {"t": {day(0), day(2)}}
    plan = plan_partitions(existing, first_day=day(0), last_day=day(3), drop_before=None)
    assert plan.create == [("t", day(1)), ("t", day(3))]
    assert plan.drop == []


def test_plan_of_a_complete_range_is_empty() -> None:
    existing = {"t": set(days(-5, 5))}
    plan = plan_partitions(existing, first_day=day(-2), last_day=day(2), drop_before=day(-5))
    assert plan == PartitionPlan(create=[], drop=[])


def test_plan_drops_days_before_drop_before_only() -> None:
    existing = {"t": set(days(-10, 0))}
    plan = plan_partitions(existing, first_day=day(0), last_day=day(0), drop_before=day(-8))
    assert plan.drop == [("t", day(-10)), ("t", day(-9))]
    assert plan.create == []


def test_plan_never_creates_what_it_would_drop() -> None:
    # A first_day earlier than drop_before: the days in between would be dropped by the next
    # run, so they are not created.
    plan = plan_partitions({"t": set()}, first_day=day(-5), last_day=day(1), drop_before=day(-1))
    assert plan.create == [("t", d) for d in days(-1, 1)]
    assert plan.drop == []


def test_plan_keeps_old_days_without_drop_before() -> None:
    existing = {"t": {dt.date(2001, 1, 1)}}
    plan = plan_partitions(existing, first_day=day(0), last_day=day(0), drop_before=None)
    assert plan == PartitionPlan(create=[("t", day(0))], drop=[])


def test_plan_of_an_empty_range_creates_nothing() -> None:
    plan = plan_partitions({"t": set()}, first_day=day(1), last_day=day(0), drop_before=None)
    assert plan.create == []


@pytest.mark.parametrize(
    ("first", "last", "drop"), [(0, 0, None), (-3, 7, None), (-3, 7, -1), (-30, 30, -20)]
)
def test_carrying_out_a_plan_leaves_nothing_to_do(first: int, last: int, drop: int | None) -> None:
    existing = {"t": set(days(-25, -15)) | {day(3)}, "u": set()}
    drop_before = day(drop) if drop is not None else None
    plan = plan_partitions(
        existing, first_day=day(first), last_day=day(last), drop_before=drop_before
    )
    for table, created in plan.create:
        existing[table].add(created)
    for table, dropped in plan.drop:
        existing[table].remove(dropped)
    again = plan_partitions(
        existing, first_day=day(first), last_day=day(last), drop_before=drop_before
    )
    assert again == PartitionPlan(create=[], drop=[])


# --- maintenance against PostgreSQL --------------------------------------------------------


@pytest.fixture
def scratch_table(pg: PgConnection) -> Iterator[str]:
    """A partitioned table of the test's own, dropped (with its partitions) afterwards."""
    name = f"scratch_{secrets.token_hex(4)}"
    pg.execute(
        sql.SQL(
            "CREATE TABLE {} (event_id uuid, client_ts timestamptz NOT NULL, "
            "PRIMARY KEY (event_id, client_ts)) PARTITION BY RANGE (client_ts)"
        ).format(sql.Identifier(name))
    )
    yield name
    pg.execute(sql.SQL("DROP TABLE {} CASCADE").format(sql.Identifier(name)))


def test_maintenance_creates_missing_partitions_idempotently(
    database_url: str, pg: PgConnection, scratch_table: str
) -> None:
    conninfo = libpq_conninfo(database_url)
    first = maintain_partitions(conninfo, [scratch_table], first_day=day(-2), last_day=day(2))
    assert first.create == [(scratch_table, d) for d in days(-2, 2)]
    assert partition_days(pg, scratch_table) == set(days(-2, 2))

    again = maintain_partitions(conninfo, [scratch_table], first_day=day(-2), last_day=day(2))
    assert again == PartitionPlan(create=[], drop=[])

    wider = maintain_partitions(conninfo, [scratch_table], first_day=day(-3), last_day=day(3))
    assert wider.create == [(scratch_table, day(-3)), (scratch_table, day(3))]
    assert partition_days(pg, scratch_table) == set(days(-3, 3))


def test_maintenance_drops_partitions_older_than_drop_before(
    database_url: str, pg: PgConnection, scratch_table: str
) -> None:
    conninfo = libpq_conninfo(database_url)
    maintain_partitions(conninfo, [scratch_table], first_day=day(-6), last_day=day(0))
    pg.execute(
        sql.SQL("INSERT INTO {} VALUES (gen_random_uuid(), %s)").format(
            sql.Identifier(scratch_table)
        ),
        (dt.datetime.combine(day(-6), dt.time(12), dt.UTC),),
    )
    plan = maintain_partitions(
        conninfo, [scratch_table], first_day=day(0), last_day=day(1), drop_before=day(-3)
    )
    assert plan.drop == [(scratch_table, d) for d in days(-6, -4)]
    assert plan.create == [(scratch_table, day(1))]
    assert partition_days(pg, scratch_table) == set(days(-3, 1))
    assert not table_exists(pg, partition_name(scratch_table, day(-6)))
    # The old day's rows went with its partition.
    left = pg.execute(sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier(scratch_table)))
    assert left.fetchone() == {"n": 0}


def test_a_partition_holds_exactly_one_utc_day(
    database_url: str, pg: PgConnection, scratch_table: str
) -> None:
    maintain_partitions(
        libpq_conninfo(database_url), [scratch_table], first_day=day(0), last_day=day(1)
    )
    midnight = dt.datetime.combine(day(1), dt.time(), dt.UTC)
    cases = {
        midnight - dt.timedelta(microseconds=1): partition_name(scratch_table, day(0)),
        midnight: partition_name(scratch_table, day(1)),
        # 23:30 on day 0 at UTC-5 is already day 1 in UTC.
        dt.datetime.combine(day(0), dt.time(23, 30), dt.timezone(dt.timedelta(hours=-5))): (
            partition_name(scratch_table, day(1))
        ),
    }
    for moment, expected in cases.items():
        found = pg.execute(
            sql.SQL(
                "INSERT INTO {} VALUES (gen_random_uuid(), %s) "
                "RETURNING tableoid::regclass::text AS p"
            ).format(sql.Identifier(scratch_table)),
            (moment,),
        ).fetchone()
        assert found == {"p": expected}, moment
    with pytest.raises(psycopg.errors.CheckViolation, match="no partition"):
        pg.execute(
            sql.SQL("INSERT INTO {} VALUES (gen_random_uuid(), %s)").format(
                sql.Identifier(scratch_table)
            ),
            (midnight + dt.timedelta(days=1),),
        )


@pytest.fixture(scope="module")
def session_today() -> dt.date:
    return utc_today()


def test_the_session_database_has_partitions_for_the_accepted_window(
    database_url: str, pg: PgConnection, session_today: dt.date
) -> None:
    settings = database_settings(database_url)
    wanted = {
        session_today + dt.timedelta(days=n)
        for n in range(-settings.max_event_age_days, settings.partitions_ahead_days + 1)
    }
    plan = maintain_for_settings(libpq_conninfo(database_url), settings, today=session_today)
    assert plan.drop == []
    for table in PARTITIONED_TABLES:
        assert wanted <= partition_days(pg, table)
    again = maintain_for_settings(libpq_conninfo(database_url), settings, today=session_today)
    assert again == PartitionPlan(create=[], drop=[])


def test_maintenance_drops_real_partitions_past_retention(
    database_url: str, pg: PgConnection, session_today: dt.date
) -> None:
    settings = database_settings(database_url)
    expired = session_today - dt.timedelta(days=settings.retention_days + 10)
    conninfo = libpq_conninfo(database_url)
    maintain_partitions(conninfo, ["typing_volume"], first_day=expired, last_day=expired)
    assert table_exists(pg, partition_name("typing_volume", expired))
    try:
        kept = maintain_for_settings(conninfo, settings, today=session_today, drop_old=False)
        assert kept.drop == []
        assert table_exists(pg, partition_name("typing_volume", expired))
        plan = maintain_for_settings(conninfo, settings, today=session_today)
        assert plan.drop == [("typing_volume", expired)]
        assert not table_exists(pg, partition_name("typing_volume", expired))
    finally:
        pg.execute(
            sql.SQL("DROP TABLE IF EXISTS {}").format(
                sql.Identifier(partition_name("typing_volume", expired))
            )
        )


# --- the collector's fallback ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "days_ago"), [("suggestion_shown", 0), ("persistence_check", 3)]
)
def test_the_collector_recreates_a_missing_partition(
    client: httpx.Client, pg: PgConnection, event_type: str, days_ago: int
) -> None:
    moment = now_utc() - dt.timedelta(days=days_ago)
    event = factories.make(event_type, client_ts=iso(moment))
    drop_partition(pg, event_type, moment.date())
    assert moment.date() not in partition_days(pg, event_type)

    response = client.post("/v1/events", json=factories.batch(event))
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == 1
    assert moment.date() in partition_days(pg, event_type)
    assert row_by_id(pg, event_type, event["event_id"])["client_ts"] == moment
