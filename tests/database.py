"""Throw-away PostgreSQL databases and small SQL helpers for the tests."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
from collections.abc import Iterator

import psycopg
from psycopg import sql
from psycopg.rows import DictRow, dict_row
from sqlalchemy.engine import make_url

from core.db.connection import libpq_conninfo
from core.settings import DatabaseSettings

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/test"

EVENT_TABLES = (
    "completion_served",
    "suggestion_shown",
    "suggestion_outcome",
    "persistence_check",
    "typing_volume",
    "feedback",
    "exposure",
)
PARTITIONED_TABLES = (
    "completion_served",
    "persistence_check",
    "suggestion_outcome",
    "suggestion_shown",
    "typing_volume",
)

PgConnection = psycopg.Connection[DictRow]


def server_url() -> str:
    """The PostgreSQL server the tests make their databases on."""
    return os.environ.get("CODELIFT_TEST_DATABASE_URL", DEFAULT_SERVER_URL)


def utc_today() -> dt.date:
    """Today's date in UTC, the day partitions are cut on."""
    return dt.datetime.now(dt.UTC).date()


def database_settings(url: str) -> DatabaseSettings:
    """Database settings with the defaults spelled out, independent of the environment."""
    return DatabaseSettings(
        database_url=url,
        environment="test",
        max_event_age_days=7,
        retention_days=90,
        partitions_ahead_days=7,
    )


@contextlib.contextmanager
def fresh_database(prefix: str = "codelift_test") -> Iterator[str]:
    """A new, empty database ``<prefix>_<random hex>``; dropped (connections and all) on exit."""
    admin = libpq_conninfo(server_url())
    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(server_url()).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def connect(url: str) -> PgConnection:
    """An autocommit connection returning dict rows, with timestamps shown in UTC."""
    conn = psycopg.connect(libpq_conninfo(url), autocommit=True, row_factory=dict_row)
    conn.execute("SET TIME ZONE 'UTC'")
    return conn


def rows(conn: PgConnection, table: str, order_by: str = "client_ts") -> list[DictRow]:
    """Every row of ``table``."""
    query = sql.SQL("SELECT * FROM {} ORDER BY {}, event_id").format(
        sql.Identifier(table), sql.Identifier(order_by)
    )
    return conn.execute(query).fetchall()


def row_by_id(conn: PgConnection, table: str, event_id: str) -> DictRow:
    """The one row of ``table`` with ``event_id``."""
    query = sql.SQL("SELECT * FROM {} WHERE event_id = %s").format(sql.Identifier(table))
    found = conn.execute(query, (event_id,)).fetchall()
    assert len(found) == 1, f"{len(found)} rows in {table} for {event_id}"
    return found[0]


def count(conn: PgConnection, table: str) -> int:
    """The number of rows in ``table``."""
    query = sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier(table))
    row = conn.execute(query).fetchone()
    assert row is not None
    n: int = row["n"]
    return n


def counts(conn: PgConnection) -> dict[str, int]:
    """Rows per event table."""
    return {table: count(conn, table) for table in EVENT_TABLES}


def truncate_events(conn: PgConnection) -> None:
    """Empty every event table (the HTTP tests' isolation).

    Only the partitions that hold rows are truncated: truncating a parent truncates every one
    of its daily partitions, each a new file, which would cost a third of a second per test.
    """
    holding = sql.SQL(" UNION ").join(
        sql.SQL("SELECT DISTINCT tableoid::regclass::text AS name FROM {}").format(
            sql.Identifier(table)
        )
        for table in EVENT_TABLES
    )
    names = [row["name"] for row in conn.execute(holding).fetchall()]
    if names:
        # The stored events' ids go with them, or their next use would count as a retry.
        tables = sql.SQL(", ").join(sql.Identifier(name) for name in (*names, "event_ids"))
        conn.execute(sql.SQL("TRUNCATE {}").format(tables))


def clear_rollups(conn: PgConnection) -> None:
    """No rollups and no watermark, as in a database never rolled up.

    For tests that commit rollups (``codelift db maintain`` rolls up): the rollup tests run in
    a rolled-back transaction and expect to start from nothing.
    """
    conn.execute("DELETE FROM metric_rollup_daily")
    conn.execute("DELETE FROM exposure_day_rollup")
    conn.execute("DELETE FROM rollup_state")


def partition_days(conn: PgConnection, table: str) -> set[dt.date]:
    """The days ``table`` has a partition for."""
    found = conn.execute(
        """
        SELECT child.relname AS name
        FROM pg_inherits
        JOIN pg_class parent ON parent.oid = pg_inherits.inhparent
        JOIN pg_class child ON child.oid = pg_inherits.inhrelid
        WHERE parent.relname = %s
        """,
        (table,),
    ).fetchall()
    prefix = f"{table}_p"
    return {
        dt.datetime.strptime(row["name"].removeprefix(prefix), "%Y%m%d").date()
        for row in found
        if row["name"].startswith(prefix)
    }


def table_exists(conn: PgConnection, name: str) -> bool:
    """Whether a table (or partition) called ``name`` exists in the current schema."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL AS found", (name,)).fetchone()
    assert row is not None
    found: bool = row["found"]
    return found


def drop_partition(conn: PgConnection, table: str, day: dt.date) -> None:
    """Detach and drop ``table``'s partition for ``day``."""
    part = sql.Identifier(f"{table}_p{day:%Y%m%d}")
    conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(sql.Identifier(table), part))
    conn.execute(sql.SQL("DROP TABLE {}").format(part))
