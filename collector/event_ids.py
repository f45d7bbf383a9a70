"""Forgetting event ids once no retry of theirs can be accepted any more.

``event_ids`` (collector.store) needs an id only while a retry of its event could still be
accepted: the acceptance window (``max_event_age_days``) plus the most clock skew a collector
may be set to tolerate (a day), counted from when the event was first stored. Older ids are
deleted in bounded batches, so pruning never holds long locks or a long transaction, and the
BRIN index on ``received_at`` finds them without a full scan.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

from collector.store import EVENT_IDS

# Rows per DELETE: each one a short transaction of its own.
PRUNE_BATCH = 50_000

_DELETE = (
    f"DELETE FROM {EVENT_IDS} WHERE ctid = ANY(ARRAY("
    f"SELECT ctid FROM {EVENT_IDS} WHERE received_at < %s LIMIT %s))"
)


# The largest max_clock_skew_s the collector's settings allow.
MAX_CLOCK_SKEW = dt.timedelta(days=1)


def remembered_since(now: dt.datetime, *, max_event_age_days: int) -> dt.datetime:
    """The oldest first-stored time whose id must still be kept at ``now``."""
    return now - dt.timedelta(days=max_event_age_days) - MAX_CLOCK_SKEW


def prune_event_ids(conn: psycopg.Connection[Any], *, before: dt.datetime) -> int:
    """Delete the ids first stored before ``before``; the number deleted.

    ``conn`` must be in autocommit mode: each batch commits on its own.
    """
    total = 0
    while True:
        deleted = conn.execute(_DELETE, (before, PRUNE_BATCH)).rowcount
        total += deleted
        if deleted < PRUNE_BATCH:
            return total


def prune_for_settings(conninfo: str, *, max_event_age_days: int, now: dt.datetime) -> int:
    """Prune the ids that ``max_event_age_days`` no longer needs; the number deleted."""
    before = remembered_since(now, max_event_age_days=max_event_age_days)
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
        return prune_event_ids(conn, before=before)
