"""The ingest hot path: validated events → binary COPY into staging → de-duplicating INSERT.

No ORM here. Each pooled connection owns one temporary staging table per event type (made
when the pool opens the connection); a batch COPYs each type's rows into its staging table and
moves them with ``INSERT … SELECT … ON CONFLICT DO NOTHING``, so a retried event is stored once
and the INSERT's row count says how many were new.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import operator
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Boolean, DateTime, Double, Integer, SmallInteger, Table, Text, Uuid
from sqlalchemy.dialects.postgresql import JSONB

from codelift.db.base import load_all_models
from collector.schemas import EVENT_TYPES, EventBase

# Binary COPY needs each column's PostgreSQL type spelled as psycopg knows it.
_COPY_TYPES: tuple[tuple[type[Any], str], ...] = (
    (Uuid, "uuid"),
    (DateTime, "timestamptz"),
    (JSONB, "jsonb"),
    (Text, "text"),
    (Boolean, "bool"),
    (SmallInteger, "int2"),
    (Double, "float8"),
    (Integer, "int4"),
)


def _copy_type(table: Table, column: str) -> str:
    col_type = table.columns[column].type
    for sa_type, name in _COPY_TYPES:
        if isinstance(col_type, sa_type):
            return name
    raise TypeError(f"{table.name}.{column}: no binary COPY type for {col_type!r}")


@dataclasses.dataclass(frozen=True)
class EventTable:
    """How one event type's rows reach its table."""

    event_type: str
    table: str
    columns: tuple[str, ...]
    copy_types: tuple[str, ...]
    create_staging: sql.Composed
    copy: sql.Composed
    insert: sql.Composed
    # Builds the row tuple (all columns but received_at, which is per batch) from an event.
    row_of: Callable[[EventBase], tuple[Any, ...]]


def _event_table(event_type: str, event_class: type[EventBase], table: Table) -> EventTable:
    fields = tuple(name for name in event_class.model_fields if name != "type")
    missing = set(fields) - set(table.columns.keys())
    if missing:
        raise TypeError(f"{table.name} lacks columns for {sorted(missing)}")
    columns = (*fields, "received_at")
    staging = sql.Identifier(f"staging_{table.name}")
    column_list = sql.SQL(", ").join(map(sql.Identifier, columns))
    getter = operator.attrgetter(*fields)
    return EventTable(
        event_type=event_type,
        table=table.name,
        columns=columns,
        copy_types=tuple(_copy_type(table, c) for c in columns),
        # ON COMMIT DELETE ROWS empties the staging table at every commit, so a batch never
        # sees rows of the one before, even after an error.
        create_staging=sql.SQL(
            "CREATE TEMPORARY TABLE IF NOT EXISTS {staging} "
            "(LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        ).format(staging=staging, table=sql.Identifier(table.name)),
        copy=sql.SQL("COPY {staging} ({columns}) FROM STDIN (FORMAT BINARY)").format(
            staging=staging, columns=column_list
        ),
        insert=sql.SQL(
            "INSERT INTO {table} ({columns}) SELECT {columns} FROM {staging} "
            "ON CONFLICT DO NOTHING"
        ).format(table=sql.Identifier(table.name), columns=column_list, staging=staging),
        row_of=getter,
    )


def build_event_tables() -> dict[str, EventTable]:
    """One EventTable per event type, checked against the ORM tables."""
    tables = load_all_models().tables
    return {
        event_type: _event_table(event_type, event_class, tables[event_type])
        for event_type, event_class in EVENT_TYPES.items()
    }


@dataclasses.dataclass(frozen=True, slots=True)
class WriteResult:
    """Rows newly stored and rows that were already there, per event type."""

    stored: dict[str, int]
    duplicates: dict[str, int]


class EventStore:
    """Writes batches of validated events; one instance per process."""

    def __init__(self) -> None:
        self.tables = build_event_tables()

    async def prepare_connection(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Create this connection's staging tables (psycopg_pool's ``configure`` hook)."""
        for spec in self.tables.values():
            await conn.execute(spec.create_staging)
        await conn.commit()

    async def write(
        self,
        conn: psycopg.AsyncConnection[Any],
        events: Sequence[EventBase],
        *,
        received_at: dt.datetime,
    ) -> WriteResult:
        """Store ``events`` in one transaction; duplicates (by event_id) are skipped."""
        groups: dict[str, list[EventBase]] = {}
        for event in events:
            groups.setdefault(event.type, []).append(event)  # type: ignore[attr-defined]
        stored: dict[str, int] = {}
        duplicates: dict[str, int] = {}
        async with conn.transaction():
            for event_type, group in groups.items():
                spec = self.tables[event_type]
                row_of = spec.row_of
                tail = (received_at,)
                async with conn.cursor().copy(spec.copy) as copy:
                    copy.set_types(list(spec.copy_types))
                    for event in group:
                        await copy.write_row((*row_of(event), *tail))
                cur = await conn.execute(spec.insert)
                stored[event_type] = cur.rowcount
                duplicates[event_type] = len(group) - cur.rowcount
        return WriteResult(stored=stored, duplicates=duplicates)
