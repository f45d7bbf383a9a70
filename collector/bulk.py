"""The event store's bulk path: columns of numpy arrays → binary COPY → de-duplicating INSERT.

For loads generated in bulk (the fleet simulator, seeded demo data, benchmarks), where per-event
validation would cost more than the load. Rows are written as PostgreSQL's binary COPY format
directly from structured arrays (no per-row Python), into a staging table like the target, and
then ``INSERT … SELECT … ON CONFLICT DO NOTHING`` on the table's own key: loading the same rows
twice adds nothing. Unlike the collector's store, it does not claim the ids in ``event_ids``
(millions of generated rows, never retried by a client, would only fill that table): a
generated row is de-duplicated against its own table only, and the store's fallback statement
skips such a row should a client ever send its id.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)

Column = tuple[str, npt.NDArray[np.generic]]  # (PostgreSQL type, values; NaN-free)
_FIXED = {"int2": ">i2", "int4": ">i4", "float8": ">f8", "timestamptz": ">i8", "bool": "u1"}


def _lengths(kind: str, values: npt.NDArray[np.generic], nulls: npt.NDArray[np.bool_]) -> Any:
    if kind in _FIXED:
        size = np.dtype(_FIXED[kind]).itemsize
        lengths = np.full(len(values), size, dtype=np.int32)
    elif kind == "uuid":
        lengths = np.full(len(values), 16, dtype=np.int32)
    else:
        text_lengths = np.char.str_len(values)  # type: ignore[arg-type]
        lengths = text_lengths.astype(np.int32) + (kind == "jsonb")
    return np.where(nulls, -1, lengths)


def copy_payload(
    columns: Mapping[str, Column], nulls: Mapping[str, npt.NDArray[np.bool_]] | None = None
) -> bytes:
    """The rows of ``columns`` in PostgreSQL's binary COPY format (header and trailer included).

    Text and jsonb values are numpy bytes arrays; rows are grouped by the lengths of their
    variable-width fields so each group is one fixed-layout structured array.
    """
    nulls = nulls or {}
    names = list(columns)
    n = len(next(iter(columns.values()))[1])
    null_of = {name: nulls.get(name, np.zeros(n, dtype=bool)) for name in names}
    lengths = np.stack(
        [_lengths(kind, values, null_of[name]) for name, (kind, values) in columns.items()], axis=1
    )
    # Only columns whose width varies split the rows into layouts.
    varying = np.flatnonzero(lengths.min(axis=0) != lengths.max(axis=0))
    if len(varying):
        _, first, group = np.unique(
            lengths[:, varying], axis=0, return_index=True, return_inverse=True
        )
        layouts = lengths[first]
        group = group.reshape(-1)
    else:
        layouts, group = lengths[:1], np.zeros(n, dtype=np.int64)
    parts = [b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)]
    for index, layout in enumerate(layouts):
        rows = np.flatnonzero(group == index)
        fields: list[tuple[str, str]] = [("count", ">i2")]
        for i, (kind, _) in enumerate(columns.values()):
            fields.append((f"l{i}", ">i4"))
            if layout[i] < 0:
                continue
            if kind in _FIXED:
                fields.append((f"v{i}", _FIXED[kind]))
            elif kind == "jsonb":
                fields.append((f"j{i}", "u1"))
                fields.append((f"v{i}", f"S{layout[i] - 1}"))
            else:
                fields.append((f"v{i}", f"S{layout[i]}"))
        out = np.empty(len(rows), dtype=np.dtype(fields))
        out["count"] = len(names)
        for i, (kind, values) in enumerate(columns.values()):
            out[f"l{i}"] = layout[i]
            if layout[i] < 0:
                continue
            if kind == "jsonb":
                out[f"j{i}"] = 1
            out[f"v{i}"] = values[rows]
        parts.append(out.tobytes())
    parts.append(struct.pack(">h", -1))
    return b"".join(parts)


def copy_columns(
    conn: psycopg.Connection[Any],
    table: str,
    columns: Mapping[str, Column],
    nulls: Mapping[str, npt.NDArray[np.bool_]] | None = None,
) -> int:
    """COPY the rows of ``columns`` into ``table``; the number of rows."""
    n = len(next(iter(columns.values()))[1])
    if n == 0:
        return 0
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.cursor().copy(statement) as copy:
        copy.write(copy_payload(columns, nulls))
    return n


# --- value helpers ------------------------------------------------------------------------------


def pg_time(unix_seconds: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Unix times as binary COPY timestamptz values (microseconds since 2000-01-01 UTC)."""
    return ((unix_seconds - PG_EPOCH.timestamp()) * 1e6).astype(np.int64)


def hex_ids(prefix: bytes, numbers: npt.NDArray[np.int64], width: int = 12) -> npt.NDArray[Any]:
    """``prefix`` + ``numbers`` in fixed-width lower-case hex, as a bytes array."""
    shifts = np.arange(width - 1, -1, -1, dtype=np.int64) * 4
    digits = _HEX[(numbers[:, None] >> shifts) & 0xF]
    head = np.broadcast_to(np.frombuffer(prefix, dtype=np.uint8), (len(numbers), len(prefix)))
    raw = np.ascontiguousarray(np.concatenate([head, digits], axis=1))
    return raw.view(f"S{len(prefix) + width}").reshape(-1)


def random_uuids(rng: np.random.Generator, n: int) -> npt.NDArray[Any]:
    """``n`` random 16-byte ids, as binary COPY uuid values."""
    return rng.integers(0, 256, size=(n, 16), dtype=np.uint8).view("S16").reshape(-1)


def const_bytes(value: bytes, n: int) -> npt.NDArray[Any]:
    """``value`` repeated ``n`` times, as a bytes array."""
    return np.full(n, value, dtype=f"S{max(1, len(value))}")


def load_columns(
    conn: psycopg.Connection[Any],
    table: str,
    columns: Mapping[str, Column],
    nulls: Mapping[str, npt.NDArray[np.bool_]] | None = None,
) -> int:
    """Store the rows of ``columns`` in ``table`` once: rows already there are skipped.

    The number of rows newly stored. The staging table is this connection's, kept for the next
    call and emptied after each.
    """
    staging = sql.Identifier(f"bulk_{table}")
    conn.execute(
        sql.SQL("CREATE TEMPORARY TABLE IF NOT EXISTS {} (LIKE {})").format(
            staging, sql.Identifier(table)
        )
    )
    copy_columns(conn, f"bulk_{table}", columns, nulls)
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    cursor = conn.execute(
        sql.SQL(
            "INSERT INTO {table} ({names}) SELECT {names} FROM {staging} ON CONFLICT DO NOTHING"
        ).format(table=sql.Identifier(table), names=names, staging=staging)
    )
    conn.execute(sql.SQL("TRUNCATE {}").format(staging))
    return cursor.rowcount
