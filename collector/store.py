"""The ingest hot path: validated events → binary COPY into staging → one exactly-once INSERT.

No ORM here. Each pooled connection owns a temporary staging table (made when the pool opens
the connection); a batch is one binary COPY into it, then one statement: the batch's ids go
into ``event_ids`` (``ON CONFLICT DO NOTHING``, in id order), and only the ids that statement
inserted are copied on into their type's table. ``event_ids`` is keyed on the id alone, so an
event is stored once whatever its retries change: a re-stamped ``client_ts`` (the typed tables'
keys carry it, as a partitioned table's unique key must), another type, a repeat in one batch.

Every writer takes the ids' locks in the same (sorted) order and only the writer that inserted
an id touches its typed row, so concurrent overlapping batches wait on each other but never
deadlock. Ids seen before are compared with what is stored: the same payload is a duplicate,
another payload a conflict, kept out and reported. Statements are rendered once, at start-up.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import operator
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Boolean, DateTime, Double, Integer, SmallInteger, Table, Text, Uuid
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql.base import PGDialect

from collector.models import event_metadata
from collector.schemas import EVENT_TYPES, EventBase

STAGING = "staging_events"
# Every stored event's id, kept for the acceptance window (collector.event_ids prunes it).
EVENT_IDS = "event_ids"
_DIALECT = PGDialect()  # type: ignore[no-untyped-call]

# Binary COPY needs each column's PostgreSQL type spelled as psycopg knows it. Order matters:
# SmallInteger is an Integer, so it comes first.
_COPY_TYPES: tuple[tuple[type[Any], str], ...] = (
    (Uuid, "uuid"),
    (DateTime, "timestamptz"),
    (postgresql.JSONB, "jsonb"),
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


def _render(statement: sql.Composable) -> bytes:
    return statement.as_string().encode()


def _sql_type(table: Table, column: str) -> str:
    return str(table.columns[column].type.compile(dialect=_DIALECT))


# Fields every event has, in the order of EventBase; then the server's received_at.
COMMON_FIELDS: tuple[str, ...] = tuple(EventBase.model_fields)
_common_values = operator.attrgetter(*COMMON_FIELDS)


@dataclasses.dataclass(frozen=True)
class EventTable:
    """How one event type's rows reach its table."""

    event_type: str
    table: str
    # The table's columns as written: the common fields, received_at, the type's own fields.
    columns: tuple[str, ...]
    copy_types: tuple[str, ...]
    # The INSERT … SELECT of this type's staging rows whose ids the batch's statement claimed
    # (without its ON CONFLICT or RETURNING clause: the two write statements differ there).
    insert: sql.Composable
    # The stored rows of given (client_ts, event_id) keys, in ``columns`` order after the id:
    # one index probe per key (LATERAL; two ANY arrays would probe their cross product).
    select_stored: bytes
    own_values: Callable[[EventBase], tuple[Any, ...]]
    # NULLs for the other types' staging columns, before and after this type's own.
    pad_before: tuple[None, ...]
    pad_after: tuple[None, ...]

    def staging_row(self, event: EventBase, received_at: dt.datetime) -> tuple[Any, ...]:
        """The event as one row of the staging table."""
        return (
            self.event_type,
            *_common_values(event),
            received_at,
            *self.pad_before,
            *self.own_values(event),
            *self.pad_after,
        )

    def table_row(self, event: EventBase, received_at: dt.datetime) -> tuple[Any, ...]:
        """The event as one row of its own table, in ``columns`` order."""
        return (*_common_values(event), received_at, *self.own_values(event))


# What a retry may change without being another event: when it was stamped and received.
_NOT_PAYLOAD = frozenset({"client_ts", "received_at"})


@dataclasses.dataclass(frozen=True)
class StagingLayout:
    """The staging table, and the one statement that moves a batch from it into the tables.

    Its columns are event_type, the common fields, received_at, then a block per event type
    (``<type>__<field>``) that is NULL in the other types' rows. One table and one COPY, not one
    per type: ON COMMIT DELETE ROWS truncates every such table at each commit (about 0.3 ms
    apiece), and each COPY is a round trip of its own; together that was a third of a batch.
    """

    tables: dict[str, EventTable]
    create: bytes
    copy: bytes
    copy_types: tuple[str, ...]
    # Claims the batch's ids in event_ids and copies the claimed rows on to their tables, in one
    # round trip; answers the rows stored per type (in ``tables`` order) and the ids not claimed.
    # ``write_new`` assumes every id is new, and fails on the first that is not: plain inserts
    # cost PostgreSQL about a third less than ON CONFLICT's speculative ones, and most batches
    # are new. ``write_any`` skips what is stored already (retries, and rows the bulk path
    # loaded without claiming their ids); a batch that ``write_new`` refused is re-run with it.
    write_new: bytes
    write_any: bytes


def build_staging_layout() -> StagingLayout:
    """The staging table and every event type's place in it, checked against the ORM tables."""
    orm_tables = event_metadata().tables
    head = ("event_type", *COMMON_FIELDS, "received_at")
    reference = orm_tables["exposure"]
    columns: list[tuple[str, str, str]] = [("event_type", "TEXT", "text")]
    columns += [(c, _sql_type(reference, c), _copy_type(reference, c)) for c in head[1:]]
    blocks: dict[str, tuple[int, tuple[str, ...]]] = {}
    for event_type, event_class in EVENT_TYPES.items():
        table = orm_tables[event_type]
        own = tuple(f for f in event_class.model_fields if f != "type" and f not in COMMON_FIELDS)
        missing = {*COMMON_FIELDS, *own} - set(table.columns.keys())
        if missing:
            raise TypeError(f"{table.name} lacks columns for {sorted(missing)}")
        blocks[event_type] = (len(columns), own)
        columns += [(f"{event_type}__{f}", _sql_type(table, f), _copy_type(table, f)) for f in own]
    width = len(columns)
    staging = sql.Identifier(STAGING)
    tables: dict[str, EventTable] = {}
    for event_type, (offset, own) in blocks.items():
        table = orm_tables[event_type]
        target = (*head[1:], *own)
        source = (*head[1:], *(f"{event_type}__{f}" for f in own))
        tables[event_type] = EventTable(
            event_type=event_type,
            table=table.name,
            columns=target,
            copy_types=tuple(_copy_type(table, c) for c in target),
            insert=sql.SQL(
                "INSERT INTO {table} ({target}) SELECT {source} FROM {staging} "
                "WHERE event_type = {event_type} AND event_id IN (SELECT event_id FROM claimed)"
            ).format(
                table=sql.Identifier(table.name),
                target=sql.SQL(", ").join(map(sql.Identifier, target)),
                source=sql.SQL(", ").join(map(sql.Identifier, source)),
                staging=staging,
                event_type=sql.Literal(event_type),
            ),
            select_stored=_render(
                sql.SQL(
                    "SELECT event_id, {target} FROM "
                    "unnest(%s::timestamptz[], %s::uuid[]) AS key (ts, id) "
                    "CROSS JOIN LATERAL (SELECT * FROM {table} "
                    "WHERE client_ts = key.ts AND event_id = key.id) AS stored"
                ).format(
                    table=sql.Identifier(table.name),
                    target=sql.SQL(", ").join(map(sql.Identifier, target)),
                )
            ),
            own_values=_values_getter(own),
            pad_before=(None,) * (offset - len(head)),
            pad_after=(None,) * (width - offset - len(own)),
        )
    return StagingLayout(
        tables=tables,
        create=_render(
            sql.SQL(
                "CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ({columns}) ON COMMIT DELETE ROWS"
            ).format(
                staging=staging,
                columns=sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(sql_type))
                    for name, sql_type, _ in columns
                ),
            )
        ),
        copy=_render(
            sql.SQL("COPY {staging} ({columns}) FROM STDIN (FORMAT BINARY)").format(
                staging=staging,
                columns=sql.SQL(", ").join(sql.Identifier(name) for name, _, _ in columns),
            )
        ),
        copy_types=tuple(copy_type for _, _, copy_type in columns),
        write_new=_render(_write_statement(tables.values(), on_conflict=False)),
        write_any=_render(_write_statement(tables.values(), on_conflict=True)),
    )


def _write_statement(tables: Iterable[EventTable], *, on_conflict: bool) -> sql.Composable:
    # ORDER BY event_id: every writer takes the ids' locks in one order, the condition for
    # overlapping batches never to deadlock. The typed inserts read the claimed ids, so the
    # claim is complete before any of them writes. A data-modifying CTE runs whether or not
    # the final SELECT reads it; reading each one's RETURNING gives the rows stored per type.
    skip = sql.SQL(" ON CONFLICT DO NOTHING" if on_conflict else "")
    staging = sql.Identifier(STAGING)
    tables = list(tables)
    ctes = [
        sql.SQL(
            "claimed AS (INSERT INTO {ids} (event_id, event_type, client_ts, received_at) "
            "SELECT event_id, event_type, client_ts, received_at FROM {staging} "
            "ORDER BY event_id{skip} RETURNING event_id)"
        ).format(ids=sql.Identifier(EVENT_IDS), staging=staging, skip=skip)
    ]
    ctes += [
        sql.SQL("{name} AS ({insert}{skip} RETURNING 1)").format(
            name=sql.Identifier(f"t{i}"), insert=table.insert, skip=skip
        )
        for i, table in enumerate(tables)
    ]
    counts = sql.SQL(", ").join(
        sql.SQL("(SELECT count(*) FROM {})").format(sql.Identifier(f"t{i}"))
        for i in range(len(tables))
    )
    return sql.SQL(
        "WITH {ctes} SELECT ARRAY[{counts}]::int8[], "
        "(SELECT array_agg(event_id) FROM {staging} "
        "WHERE event_id NOT IN (SELECT event_id FROM claimed))"
    ).format(ctes=sql.SQL(", ").join(ctes), counts=counts, staging=staging)


def _values_getter(fields: tuple[str, ...]) -> Callable[[EventBase], tuple[Any, ...]]:
    # attrgetter of a single name returns the value itself, not a 1-tuple.
    if len(fields) == 1:
        (name,) = fields
        return lambda event: (getattr(event, name),)
    return operator.attrgetter(*fields)


@dataclasses.dataclass(frozen=True, slots=True)
class Conflict:
    """An event whose id was stored before with another payload; it was not stored."""

    # Its position in the events given to ``EventStore.write``.
    position: int
    event_id: uuid.UUID
    event_type: str
    # What differs from the stored event: field names, or "type" for another event type.
    fields: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class WriteResult:
    """Rows newly stored, repeats of stored events, and conflicting repeats, per event type."""

    stored: dict[str, int]
    duplicates: dict[str, int]
    conflicts: list[Conflict] = dataclasses.field(default_factory=list)


class EventStore:
    """Writes batches of validated events; one instance per process."""

    def __init__(self) -> None:
        self.layout = build_staging_layout()
        self._order = list(self.layout.tables)

    async def prepare_connection(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Create this connection's staging table (psycopg_pool's ``configure`` hook)."""
        await conn.execute(self.layout.create)
        # The staging table is never analyzed (it is emptied at every commit), so the planner
        # guesses it holds a few dozen rows and semi-joins the claimed ids by nested loop: 500
        # events cost 30 ms that way, 1 ms by hash. The one query that wants a nested loop (a
        # retry's stored versions, by key) turns it back on for its own transaction.
        await conn.execute("SET enable_nestloop = off")
        await conn.commit()

    async def write(
        self,
        conn: psycopg.AsyncConnection[Any],
        events: Sequence[EventBase],
        *,
        received_at: dt.datetime,
    ) -> WriteResult:
        """Store ``events`` in one transaction, each ``event_id`` once; report the repeats."""
        first: dict[uuid.UUID, int] = {}
        repeats: list[int] = []
        for position, event in enumerate(events):
            if first.setdefault(event.event_id, position) != position:
                repeats.append(position)
        stored = dict.fromkeys(self._order, 0)
        # The version of each repeated id that the tables hold, (type, payload), once known.
        reference: dict[uuid.UUID, tuple[str, dict[str, Any]] | None] = {}
        if first:
            unique = [events[position] for position in first.values()]
            try:
                counts, seen = await self._claim(conn, unique, received_at, self.layout.write_new)
            except psycopg.errors.UniqueViolation:
                # Some id was stored already (a retry, or a batch that overlaps): again, skipping.
                counts, seen = await self._claim(conn, unique, received_at, self.layout.write_any)
            stored.update(zip(self._order, counts, strict=True))
            if seen:
                reference.update(seen)
        conflicts: list[Conflict] = []
        for event_id in reference:
            self._compare(events, first[event_id], reference, conflicts)
        for position in repeats:
            event_id = events[position].event_id
            if event_id not in reference:
                earlier = events[first[event_id]]
                reference[event_id] = (earlier.type, self._payload(earlier))  # type: ignore[attr-defined]
            self._compare(events, position, reference, conflicts)
        received = Counter(event.type for event in events)  # type: ignore[attr-defined]
        refused = Counter(conflict.event_type for conflict in conflicts)
        return WriteResult(
            stored={t: n for t, n in stored.items() if n},
            duplicates={t: n for t in received if (n := received[t] - stored[t] - refused[t]) > 0},
            conflicts=sorted(conflicts, key=lambda c: c.position),
        )

    async def _claim(
        self,
        conn: psycopg.AsyncConnection[Any],
        events: list[EventBase],
        received_at: dt.datetime,
        statement: bytes,
    ) -> tuple[list[int], dict[uuid.UUID, tuple[str, dict[str, Any]] | None]]:
        # One transaction: COPY into staging, the write statement, and the stored versions of
        # the ids it did not claim (stored before, or by a batch that committed while this one
        # waited on them: visible to the next statement's snapshot).
        tables = self.layout.tables
        async with conn.transaction():
            async with conn.cursor().copy(self.layout.copy) as copy:
                copy.set_types(list(self.layout.copy_types))
                for event in events:
                    table = tables[event.type]  # type: ignore[attr-defined]
                    await copy.write_row(table.staging_row(event, received_at))
            cur = await conn.execute(statement)
            row = await cur.fetchone()
            assert row is not None
            counts, seen = row
            return counts, (await self._stored_versions(conn, seen) if seen else {})

    def _payload(self, event: EventBase) -> dict[str, Any]:
        table = self.layout.tables[event.type]  # type: ignore[attr-defined]
        return _payload_of(table.columns, table.table_row(event, _NO_TIME))

    def _compare(
        self,
        events: Sequence[EventBase],
        position: int,
        reference: dict[uuid.UUID, tuple[str, dict[str, Any]] | None],
        conflicts: list[Conflict],
    ) -> None:
        # A repeat is a duplicate when its payload is the stored one, else a conflict.
        event = events[position]
        event_type: str = event.type  # type: ignore[attr-defined]
        known = reference[event.event_id]
        if known is None:
            return  # its row is gone or was never readable: nothing to compare, a duplicate
        known_type, known_payload = known
        if known_type != event_type:
            differs: tuple[str, ...] = ("type",)
        else:
            payload = self._payload(event)
            differs = tuple(f for f, value in payload.items() if known_payload.get(f) != value)
        if differs:
            conflicts.append(Conflict(position, event.event_id, event_type, differs))

    async def _stored_versions(
        self, conn: psycopg.AsyncConnection[Any], ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, tuple[str, dict[str, Any]] | None]:
        # Key lookups want the nested loop the connection turns off for the write statement
        # (a hash join here would scan every partition); only until this transaction ends.
        await conn.execute("SET LOCAL enable_nestloop = on")
        cur = await conn.execute(_SELECT_CLAIMS, (ids,))
        claims: dict[str, list[tuple[dt.datetime, uuid.UUID]]] = {}
        versions: dict[uuid.UUID, tuple[str, dict[str, Any]] | None] = dict.fromkeys(ids)
        for event_id, event_type, client_ts in await cur.fetchall():
            claims.setdefault(event_type, []).append((client_ts, event_id))
        for event_type, keys in claims.items():
            table = self.layout.tables.get(event_type)
            if table is None:
                continue
            times, key_ids = zip(*keys, strict=True)
            cur = await conn.execute(table.select_stored, (list(times), list(key_ids)))
            for event_id, *values in await cur.fetchall():
                versions[event_id] = (event_type, _payload_of(table.columns, values))
        return versions


# Any time will do where the payload leaves the time out.
_NO_TIME = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_SELECT_CLAIMS = f"SELECT event_id, event_type, client_ts FROM {EVENT_IDS} WHERE event_id = ANY(%s)"


def _payload_of(columns: Sequence[str], values: Sequence[Any]) -> dict[str, Any]:
    return {c: v for c, v in zip(columns, values, strict=True) if c not in _NOT_PAYLOAD}
