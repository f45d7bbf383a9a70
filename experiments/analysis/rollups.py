"""Incremental rollups of metric components, so analysis time stops growing with old events.

``refresh_rollups`` rewrites whole UTC days of ``metric_rollup_daily`` from the raw events:
every day from the last refresh's watermark (less ``lookback_days``, for late events) to the
newest event, or the days asked for. For every exposure on a rewritten day (or written since the
last refresh) it rewrites the user's ``exposure_day_rollup`` rows, the exposure day split at
the user's first exposure instant over all their exposures to the experiment (so a duplicate
exposure changes nothing, and an earlier one arriving late re-splits the user's days).
A refresh deletes and re-inserts, so running it twice changes nothing; it runs in the
caller's transaction, serialized by a lock on the watermark row.

The trap: an event arriving more than ``lookback_days`` after its day is not seen by the
periodic refresh; refresh those days explicitly (``days=``) after a backfill.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import sqlalchemy
from sqlalchemy import text

from experiments.analysis.contributions import (
    COMPONENTS,
    analysis_settings,
    component_sums,
    contribution_ctes,
)

EVENT_TABLES = (
    "completion_served",
    "suggestion_shown",
    "suggestion_outcome",
    "persistence_check",
    "typing_volume",
)
DEFAULT_LOOKBACK_DAYS = 2
_COLUMNS = ", ".join(COMPONENTS)


@dataclasses.dataclass(frozen=True)
class RollupRefresh:
    """What a refresh did: the days rewritten (inclusive), rows written, the new watermark."""

    first_day: dt.date | None
    last_day: dt.date | None
    daily_rows: int
    exposure_day_rows: int
    watermark: dt.datetime


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC)


def _event_range(conn: sqlalchemy.Connection) -> tuple[dt.datetime | None, dt.datetime | None]:
    # min/max of the leading primary-key column: an index probe per partition, not a scan.
    parts = " UNION ALL ".join(
        f"SELECT min(client_ts) AS lo, max(client_ts) AS hi FROM {table}" for table in EVENT_TABLES
    )
    row = conn.execute(text(f"SELECT min(lo), max(hi) FROM ({parts}) t")).one()
    return row[0], row[1]


def refresh_rollups(
    conn: sqlalchemy.Connection,
    *,
    days: tuple[dt.date, dt.date] | None = None,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    now: dt.datetime | None = None,
) -> RollupRefresh:
    """Rewrite the rollups of the days touched since the last refresh (or of ``days``)."""
    if lookback_days < 0:
        raise ValueError(f"lookback_days must be >= 0, got {lookback_days}")
    started = now or conn.execute(text("SELECT now()")).scalar_one()
    conn.execute(
        text(
            "INSERT INTO rollup_state (id, watermark, refreshed_at) "
            "VALUES (1, '-infinity', '-infinity') ON CONFLICT (id) DO NOTHING"
        )
    )
    previous: dt.datetime | None = conn.execute(
        text(
            "SELECT CASE WHEN watermark = '-infinity' THEN NULL ELSE watermark END "
            "FROM rollup_state WHERE id = 1 FOR UPDATE"
        )
    ).scalar_one()
    oldest, newest = _event_range(conn)
    first: dt.date | None
    last: dt.date | None
    if days is not None:
        first, last = days
    elif oldest is None or newest is None:
        first = last = None
    else:
        first = oldest.astimezone(dt.UTC).date()
        if previous is not None:
            first = max(first, previous.astimezone(dt.UTC).date() - dt.timedelta(lookback_days))
        last = max(newest.astimezone(dt.UTC).date(), started.astimezone(dt.UTC).date())
    daily = exposure_day = 0
    if first is not None and last is not None:
        with analysis_settings(conn):
            if first <= last:
                daily = _refresh_daily(conn, first, last)
            exposure_day = _refresh_exposure_days(conn, first, last, previous)
    conn.execute(
        text("UPDATE rollup_state SET watermark = :w, refreshed_at = now() WHERE id = 1"),
        {"w": started},
    )
    return RollupRefresh(first, last, daily, exposure_day, started)


def _refresh_daily(conn: sqlalchemy.Connection, first: dt.date, last: dt.date) -> int:
    params = {"lo": _day_start(first), "hi": _day_start(last + dt.timedelta(days=1))}
    conn.execute(
        text("DELETE FROM metric_rollup_daily WHERE day BETWEEN :first AND :last"),
        {"first": first, "last": last},
    )
    day = "(ts AT TIME ZONE 'UTC')::date"
    result = conn.execute(
        text(f"""
WITH {contribution_ctes(windowed=False)},
agg AS (
    SELECT user_id, {day} AS day, language, {component_sums()}, max(ts) AS last_ts
    FROM contrib GROUP BY 1, 2, 3
),
hist AS (
    SELECT user_id, day, language, array_agg(bucket ORDER BY bucket) AS buckets,
           array_agg(n ORDER BY bucket) AS counts
    FROM (
        SELECT user_id, {day} AS day, language, bucket::smallint, count(*)::int AS n
        FROM srv GROUP BY 1, 2, 3, 4
    ) b
    GROUP BY 1, 2, 3
)
INSERT INTO metric_rollup_daily (day, user_id, language, {_COLUMNS},
                                 latency_buckets, latency_counts, last_ts)
SELECT a.day, a.user_id, a.language, {", ".join(f"a.{c}" for c in COMPONENTS)},
       coalesce(h.buckets, '{{}}'), coalesce(h.counts, '{{}}'), a.last_ts
FROM agg a LEFT JOIN hist h USING (user_id, day, language)
"""),
        params,
    )
    return result.rowcount


def _refresh_exposure_days(
    conn: sqlalchemy.Connection, first: dt.date, last: dt.date, previous: dt.datetime | None
) -> int:
    conn.execute(
        text("""
CREATE TEMPORARY TABLE rollup_win ON COMMIT DROP AS
WITH touched AS (
    SELECT DISTINCT experiment, user_id FROM exposure
    WHERE (client_ts >= :lo AND client_ts < :hi) OR received_at >= :previous
),
first AS (
    SELECT e.experiment, e.user_id, min(e.arm) AS arm, min(e.client_ts) AS split
    FROM exposure e JOIN touched t USING (experiment, user_id)
    GROUP BY e.experiment, e.user_id
)
SELECT user_id, experiment, arm,
       date_trunc('day', split AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS lo, split,
       date_trunc('day', split AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '1 day' AS hi
FROM first
"""),
        {
            "lo": _day_start(first),
            "hi": _day_start(last + dt.timedelta(days=1)),
            "previous": previous or dt.datetime.max.replace(tzinfo=dt.UTC),
        },
    )
    conn.execute(text("ANALYZE rollup_win"))
    bounds = conn.execute(text("SELECT min(lo), max(hi) FROM rollup_win")).one()
    if bounds[0] is None:
        conn.execute(text("DROP TABLE rollup_win"))
        return 0
    conn.execute(
        text(
            "DELETE FROM exposure_day_rollup r USING rollup_win w "
            "WHERE r.experiment = w.experiment AND r.user_id = w.user_id"
        )
    )
    result = conn.execute(
        text(f"""
WITH win AS (SELECT * FROM rollup_win),
{contribution_ctes(windowed=True)},
agg AS (
    SELECT experiment, user_id, language, post, {component_sums()}, max(ts) AS last_ts
    FROM contrib GROUP BY 1, 2, 3, 4
),
hist AS (
    SELECT experiment, user_id, language, post, array_agg(bucket ORDER BY bucket) AS buckets,
           array_agg(n ORDER BY bucket) AS counts
    FROM (
        SELECT experiment, user_id, language, post, bucket::smallint, count(*)::int AS n
        FROM srv GROUP BY 1, 2, 3, 4, 5
    ) b
    GROUP BY 1, 2, 3, 4
)
INSERT INTO exposure_day_rollup (experiment, user_id, language, post, {_COLUMNS},
                                 latency_buckets, latency_counts, last_ts)
SELECT a.experiment, a.user_id, a.language, a.post,
       {", ".join(f"a.{c}" for c in COMPONENTS)},
       coalesce(h.buckets, '{{}}'), coalesce(h.counts, '{{}}'), a.last_ts
FROM agg a LEFT JOIN hist h USING (experiment, user_id, language, post)
"""),
        {"lo": bounds[0], "hi": bounds[1]},
    )
    conn.execute(text("DROP TABLE rollup_win"))
    return result.rowcount
