"""Pre-period sufficient statistics for experiment planning, read from ``metric_rollup_daily``.

Two statements over the targeted languages' rollup rows of the window (whole UTC days):

- **growth**: per language (and for all languages together) the histogram of each user's runs
  of inactive days (the gaps before, between and after their active days). Python turns it into
  U(L), the mean number of distinct users over every L-day stretch of the window
  (``planning_growth``), so no per-user row leaves PostgreSQL.
- **moments**: for a grid of lengths L, each user's components summed over the window's last L
  days, capped as the experiment caps them (``moments_sql.metric_values``, percentiles per L and
  language), and the metrics' moments over the users active in those days.

A user is *seen* on a day when they have a completion served or a suggestion shown that day (the
mean metric's "active" of ``moments_sql``): that is when the gateway would expose them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection, Mapping, Sequence

import sqlalchemy
from sqlalchemy import text

from experiments.analysis.contributions import analysis_settings
from experiments.analysis.moments_sql import (
    ACTIVE,
    Caps,
    components_of,
    metric_stats,
    metric_values,
    moment_aggregates,
)
from experiments.analysis.stats.moments import Moments
from experiments.definitions.config import Selector

# The key of the all-languages group in SQL (a percentile cap's join needs a non-null key).
ALL = ""
# Window lengths (days) whose moments are measured; others are interpolated between them.
LENGTH_GRID = (1, 2, 3, 5, 7, 10, 14, 21, 28, 42, 56, 90)


@dataclasses.dataclass(frozen=True)
class GroupGrowth:
    """One group's users in the window and the histogram of their inactive runs (days → count)."""

    users: int
    gaps: Mapping[int, int]


@dataclasses.dataclass(frozen=True)
class WindowMoments:
    """One group's metrics over the window's last ``days`` days, over its ``active_users``."""

    days: int
    active_users: int
    metrics: Mapping[str, Moments]


@dataclasses.dataclass(frozen=True)
class PrePeriod:
    """Everything planning needs from the pre-period, per group (None: all languages)."""

    first_day: dt.date
    days: int
    growth: Mapping[str | None, GroupGrowth]
    moments: Mapping[str | None, Sequence[WindowMoments]]

    @property
    def languages(self) -> list[str]:
        """The targeted languages seen, most users first."""
        names = [lang for lang in self.growth if lang is not None]
        return sorted(names, key=lambda lang: (-self.growth[lang].users, lang))


def _stop(first_day: dt.date, days: int) -> dt.date:
    return first_day + dt.timedelta(days=days)


def _language_filter(languages: Selector) -> tuple[str, dict[str, list[str]]]:
    return (
        "(cardinality(CAST(:include AS text[])) = 0 OR language = ANY(CAST(:include AS text[])))"
        " AND NOT language = ANY(CAST(:exclude AS text[]))",
        {"include": list(languages.include), "exclude": list(languages.exclude)},
    )


def data_days(
    conn: sqlalchemy.Connection, *, first_day: dt.date, stop_day: dt.date, languages: Selector
) -> tuple[dt.date, dt.date] | None:
    """The first and last day in [first_day, stop_day) with a targeted user seen, if any."""
    where, params = _language_filter(languages)
    row = conn.execute(
        text(
            "SELECT min(day), max(day) FROM metric_rollup_daily "
            f"WHERE day >= :first AND day < :stop AND {ACTIVE} AND {where}"
        ),
        {"first": first_day, "stop": stop_day, **params},
    ).one()
    if row[0] is None:
        return None
    return row[0], row[1]


_GROWTH_SQL = """
WITH act AS (
    SELECT user_id, language, day - CAST(:first AS date) AS d
    FROM metric_rollup_daily
    WHERE day >= CAST(:first AS date) AND day < CAST(:stop AS date) AND {active} AND {where}
),
per AS (
    SELECT language AS grp, user_id, array_agg(d) AS ds, max(d) AS last FROM act GROUP BY 1, 2
    UNION ALL
    SELECT CAST(:all AS text), user_id, array_agg(d), max(d) FROM act GROUP BY user_id
),
gaps AS (
    -- The run before each active day (the first one's from the window's start), sorted per user
    -- (no sort of every row), then the run after the last one: one last_run row per user.
    SELECT p.grp, g.gap, false AS last_run
    FROM per p CROSS JOIN LATERAL (
        SELECT d - coalesce(lag(d) OVER (ORDER BY d), -1) - 1 AS gap
        FROM (SELECT DISTINCT d FROM unnest(p.ds) AS u(d)) days
    ) g
    UNION ALL
    SELECT grp, CAST(:n AS int) - 1 - last, true FROM per
)
SELECT grp, gap, count(*) FILTER (WHERE gap > 0) AS runs, count(*) FILTER (WHERE last_run) AS users
FROM gaps GROUP BY grp, gap
"""


def load_growth(
    conn: sqlalchemy.Connection, *, first_day: dt.date, days: int, languages: Selector
) -> dict[str | None, GroupGrowth]:
    """Per group, its users and the histogram of their inactive runs over the window."""
    where, params = _language_filter(languages)
    rows = conn.execute(
        text(_GROWTH_SQL.format(active=ACTIVE, where=where)),
        {"first": first_day, "stop": _stop(first_day, days), "n": days, "all": ALL, **params},
    ).all()
    users: dict[str | None, int] = {}
    gaps: dict[str | None, dict[int, int]] = {}
    for row in rows:
        group = None if row.grp == ALL else str(row.grp)
        users[group] = users.get(group, 0) + int(row.users)
        if row.runs:
            gaps.setdefault(group, {})[int(row.gap)] = int(row.runs)
    return {group: GroupGrowth(n, gaps.get(group, {})) for group, n in users.items()}


def lengths_for(days: int) -> tuple[int, ...]:
    """The grid's lengths that fit in a window of ``days`` days, and the whole window."""
    return tuple(sorted({length for length in LENGTH_GRID if length < days} | {days}))


def load_window_moments(
    conn: sqlalchemy.Connection,
    *,
    first_day: dt.date,
    days: int,
    languages: Selector,
    metrics: Collection[str],
    caps: Caps,
) -> dict[str | None, list[WindowMoments]]:
    """Per group, the metrics' moments over the window's last L days for each L of the grid."""
    components = components_of(metrics)
    lengths = lengths_for(days)

    def col(name: str, length: int) -> str:
        return f"{name}__{length}"

    # One pass over the rows: a column per (component, L) sums the user's last L days (a join
    # with the grid would multiply the rows and sort them), then a row per L again.
    by_length = ", ".join(
        f"coalesce(sum({name}) FILTER (WHERE d >= {days - length}), 0)::float8 "
        f"AS {col(name, length)}"
        for length in lengths
        for name in components
    )
    regroup = ", ".join(
        f"sum({col(name, length)}) AS {col(name, length)}"
        for length in lengths
        for name in components
    )
    unpivot = ", ".join(
        f"({length}, {', '.join(f'p.{col(name, length)}' for name in components)})"
        for length in lengths
    )
    where, params = _language_filter(languages)
    values = metric_values("rows", name="vals", metrics=metrics, caps=caps, group=("l", "grp"))
    statement = f"""
WITH r AS (
    SELECT user_id, language, day - CAST(:first AS date) AS d, {", ".join(components)}
    FROM metric_rollup_daily
    WHERE day >= CAST(:first AS date) AND day < CAST(:stop AS date) AND {where}
),
ul AS (SELECT user_id, language AS grp, {by_length} FROM r GROUP BY user_id, language),
per AS (
    SELECT * FROM ul
    UNION ALL
    SELECT user_id, CAST(:all AS text), {regroup} FROM ul GROUP BY user_id
),
rows AS (
    SELECT p.user_id, p.grp, v.*
    FROM per p CROSS JOIN LATERAL (VALUES {unpivot}) AS v(l, {", ".join(components)})
    WHERE {ACTIVE}
),
{values}
SELECT l, grp, count(*) AS active_users, {moment_aggregates(cuped=False, metrics=metrics)}
FROM vals GROUP BY l, grp ORDER BY l
"""
    rows = (
        conn.execute(
            text(statement),
            {"first": first_day, "stop": _stop(first_day, days), "all": ALL, **params},
        )
        .mappings()
        .all()
    )
    out: dict[str | None, list[WindowMoments]] = {}
    for row in rows:
        group = None if row["grp"] == ALL else str(row["grp"])
        stats = metric_stats(row, "", group, cuped=False, metrics=metrics)
        out.setdefault(group, []).append(
            WindowMoments(
                days=int(row["l"]),
                active_users=int(row["active_users"]),
                metrics={s.metric: s.moments for s in stats},
            )
        )
    return out


def load_pre_period(
    conn: sqlalchemy.Connection,
    *,
    first_day: dt.date,
    stop_day: dt.date,
    languages: Selector,
    metrics: Collection[str],
    caps: Caps,
) -> PrePeriod | None:
    """The pre-period's statistics over [first_day, stop_day), trimmed to the days with data
    (None: no targeted user seen at all)."""
    seen = data_days(conn, first_day=first_day, stop_day=stop_day, languages=languages)
    if seen is None:
        return None
    first, last = seen
    days = (last - first).days + 1
    with analysis_settings(conn):
        return PrePeriod(
            first_day=first,
            days=days,
            growth=load_growth(conn, first_day=first, days=days, languages=languages),
            moments=load_window_moments(
                conn, first_day=first, days=days, languages=languages, metrics=metrics, caps=caps
            ),
        )
