"""Daily partitions of the high-volume event tables: create ahead, drop past retention.

Partitions are named ``<table>_pYYYYMMDD`` and cover one UTC day of ``client_ts``. The plan
(what to create, what to drop) is a pure function; ``maintain_partitions`` carries it out.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import MetaData

from collector.models import event_metadata
from core.db.base import PARTITION_COLUMN
from core.settings import DatabaseSettings

_SUFFIX = re.compile(r"_p(\d{8})$")
# Any constant will do, as long as every process that creates partitions uses the same one.
_ADVISORY_LOCK_ID = 0x636C_7061


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic filter: partitions (and their indexes) are made by maintenance, not migrations,
    so autogenerate must not see them as tables to drop."""
    if type_ == "table" and reflected and name and _SUFFIX.search(name):
        return False
    return not (
        type_ == "index" and reflected and obj.table is not None and _SUFFIX.search(obj.table.name)
    )


def partitioned_tables(metadata: MetaData) -> list[str]:
    """Names of the tables partitioned by day, in a stable order."""
    return sorted(name for name, table in metadata.tables.items() if PARTITION_COLUMN in table.info)


def partition_name(table: str, day: dt.date) -> str:
    """The partition of ``table`` holding ``day``."""
    return f"{table}_p{day:%Y%m%d}"


@dataclasses.dataclass(frozen=True)
class PartitionPlan:
    """What maintenance will do: (table, day) pairs to create and to drop."""

    create: list[tuple[str, dt.date]]
    drop: list[tuple[str, dt.date]]


def plan_partitions(
    existing: Mapping[str, set[dt.date]],
    *,
    first_day: dt.date,
    last_day: dt.date,
    drop_before: dt.date | None,
) -> PartitionPlan:
    """Create every missing day in [first_day, last_day]; drop days before ``drop_before``."""
    create: list[tuple[str, dt.date]] = []
    drop: list[tuple[str, dt.date]] = []
    for table, days in sorted(existing.items()):
        day = max(first_day, drop_before) if drop_before else first_day
        while day <= last_day:
            if day not in days:
                create.append((table, day))
            day += dt.timedelta(days=1)
        if drop_before is not None:
            drop.extend((table, old) for old in sorted(days) if old < drop_before)
    return PartitionPlan(create=create, drop=drop)


def existing_partitions(conn: psycopg.Connection, tables: Iterable[str]) -> dict[str, set[dt.date]]:
    """The days each partitioned table has a partition for."""
    names = list(tables)
    found: dict[str, set[dt.date]] = {name: set() for name in names}
    rows = conn.execute(
        """
        SELECT parent.relname, child.relname
        FROM pg_inherits
        JOIN pg_class parent ON parent.oid = pg_inherits.inhparent
        JOIN pg_class child ON child.oid = pg_inherits.inhrelid
        JOIN pg_namespace ns ON ns.oid = parent.relnamespace
        WHERE ns.nspname = current_schema() AND parent.relname = ANY(%s)
        """,
        (names,),
    ).fetchall()
    for parent, child in rows:
        match = _SUFFIX.search(child)
        if match:
            found[parent].add(dt.datetime.strptime(match.group(1), "%Y%m%d").date())
    return found


def _create_statement(table: str, day: dt.date) -> sql.Composed:
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {part} PARTITION OF {table} FOR VALUES FROM ({lo}) TO ({hi})"
    ).format(
        part=sql.Identifier(partition_name(table, day)),
        table=sql.Identifier(table),
        lo=sql.Literal(start),
        hi=sql.Literal(start + dt.timedelta(days=1)),
    )


def maintain_partitions(
    conninfo: str,
    tables: Iterable[str],
    *,
    first_day: dt.date,
    last_day: dt.date,
    drop_before: dt.date | None = None,
) -> PartitionPlan:
    """Create the missing partitions in [first_day, last_day] and drop those before ``drop_before``.

    Safe to run from several processes at once: creation is serialized by an advisory lock and
    re-planned under it, so two collectors starting together don't race on the catalog.
    """
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_ADVISORY_LOCK_ID,))
        try:
            plan = plan_partitions(
                existing_partitions(conn, tables),
                first_day=first_day,
                last_day=last_day,
                drop_before=drop_before,
            )
            for table, day in plan.create:
                conn.execute(_create_statement(table, day))
            for table, day in plan.drop:
                # Detaching first means inserts into the live partitions never wait on the drop.
                part = sql.Identifier(partition_name(table, day))
                conn.execute(
                    sql.SQL("ALTER TABLE {table} DETACH PARTITION {part} CONCURRENTLY").format(
                        table=sql.Identifier(table), part=part
                    )
                )
                conn.execute(sql.SQL("DROP TABLE {part}").format(part=part))
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_ADVISORY_LOCK_ID,))
    return plan


def maintain_for_settings(
    conninfo: str, settings: DatabaseSettings, *, today: dt.date, drop_old: bool = True
) -> PartitionPlan:
    """Partitions for every day an event may be accepted for, plus ``partitions_ahead_days``."""
    return maintain_partitions(
        conninfo,
        partitioned_tables(event_metadata()),
        first_day=today - dt.timedelta(days=settings.max_event_age_days),
        last_day=today + dt.timedelta(days=settings.partitions_ahead_days),
        drop_before=today - dt.timedelta(days=settings.retention_days) if drop_old else None,
    )
