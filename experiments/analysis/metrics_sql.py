"""Metric SQL: per arm (and per arm x language) sufficient statistics of every catalog metric.

Per-user rows never leave the database: SQL sums each user's components first (over days and,
for the all-languages row, over languages), forms the user's m and d, and returns only sums over
users per (arm, language). Two sources give the same numbers: ``raw`` reads the event tables,
``rollups`` reads ``metric_rollup_daily`` and ``exposure_day_rollup`` (kept by
``experiments.analysis.rollups.refresh_rollups``), so its cost does not grow with old raw events.

What each event adds to a user's components, and the choices made where the metric
definitions (docs/metrics.md) are silent: ``experiments.analysis.contributions``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any, Literal

import sqlalchemy
from sqlalchemy import text

from experiments.analysis.contributions import (
    COMPONENTS,
    analysis_settings,
    contribution_ctes,
)
from experiments.analysis.exposures_sql import EXPOSED, EXPOSURE_GROUPS
from experiments.analysis.moments_sql import (
    Caps,
    MetricStats,
    metric_stats,
    metric_values,
    moment_aggregates,
)
from experiments.analysis.quantiles_sql import QuantileStats, load_latency_quantiles
from experiments.analysis.stats.moments import Moments, RatioMoments
from experiments.definitions.capping import Capping
from experiments.definitions.metrics_catalog import QUANTILES

Source = Literal["raw", "rollups"]


@dataclasses.dataclass(frozen=True)
class ExperimentData:
    """Everything the statistics need about one experiment; no per-user rows."""

    experiment: str
    users_per_arm: dict[str, int]
    first_exposure: dt.datetime | None
    last_event: dt.datetime | None
    metrics: list[MetricStats]
    # Latency quantiles' inputs per (arm, language, quantile): ``quantiles_sql``.
    quantiles: list[QuantileStats]
    source: Source
    # Users exposed to more than one arm: left out of every figure above.
    multiple_arm_users: int = 0
    # For source="rollups": the last refresh's watermark (events after it are not counted yet).
    rollups_as_of: dt.datetime | None = None
    # The caps applied, per metric.
    caps: Mapping[str, Capping] = dataclasses.field(default_factory=dict)

    def get(self, metric: str, arm: str, language: str | None = None) -> Moments:
        """The moments of ``metric`` in ``arm`` (and ``language``)."""
        for stats in self.metrics:
            if (stats.metric, stats.arm, stats.language) == (metric, arm, language):
                return stats.moments
        raise KeyError((metric, arm, language))

    def quantile(self, metric: str, arm: str, language: str | None = None) -> QuantileStats:
        """The histogram and moments of quantile ``metric`` in ``arm`` (and ``language``)."""
        for stats in self.quantiles:
            if (stats.metric, stats.arm, stats.language) == (metric, arm, language):
                return stats
        raise KeyError((metric, arm, language))


# --- sufficient statistics ------------------------------------------------------------------------


def _statistics_sql(source_sql: str, *, cuped: bool, by_language: bool, caps: Caps) -> str:
    """Per user (and language) sums, then per (arm, language) and per arm sums over users.

    ``source_sql`` yields (arm, user_id, language, post, the components, last_ts). Percentile
    caps are computed per row of the result over both arms: the all-languages row's over users,
    a language's over that language's users.
    """
    if cuped:
        per_user = ", ".join(
            f"coalesce(sum({name}) FILTER (WHERE post), 0)::float8 AS {name}, "
            f"coalesce(sum({name}) FILTER (WHERE NOT post), 0)::float8 AS {name}__pre"
            for name in COMPONENTS
        )
        regroup = ", ".join(
            f"sum({name}) AS {name}, sum({name}__pre) AS {name}__pre" for name in COMPONENTS
        )
        last_ts = "max(last_ts) FILTER (WHERE post)"
    else:
        # Without CUPED every source row is after exposure: no pre-period columns to carry.
        per_user = ", ".join(f"sum({name})::float8 AS {name}" for name in COMPONENTS)
        regroup = ", ".join(f"sum({name}) AS {name}" for name in COMPONENTS)
        last_ts = "max(last_ts)"
    moments = moment_aggregates(cuped=cuped)
    active = "count(*) FILTER (WHERE active)"
    overall = metric_values("u", name="uv", caps=caps, cuped=cuped, keep=("arm", "last_ts"))
    if not by_language:
        return f"""
src AS ({source_sql}),
u AS (
    SELECT arm, user_id, {per_user}, {last_ts} AS last_ts FROM src GROUP BY arm, user_id
),
{overall}
SELECT arm, NULL AS language, {active} AS active_users, max(last_ts) AS last_ts, {moments}
FROM uv GROUP BY arm
"""
    per_language = metric_values(
        "ul",
        name="ulv",
        caps=caps,
        cuped=cuped,
        group=("language",),
        keep=("arm", "language", "last_ts"),
    )
    return f"""
src AS ({source_sql}),
ul AS (
    SELECT arm, user_id, language, {per_user}, {last_ts} AS last_ts
    FROM src GROUP BY arm, user_id, language
),
u AS (
    SELECT arm, user_id, {regroup}, max(last_ts) AS last_ts FROM ul GROUP BY arm, user_id
),
{per_language},
{overall}
SELECT arm, language, {active} AS active_users, max(last_ts) AS last_ts, {moments}
FROM ulv GROUP BY arm, language
UNION ALL
SELECT arm, NULL, {active}, max(last_ts), {moments}
FROM uv GROUP BY arm
"""


# Midnight UTC of the exposure day.
_DAY_START = "((x.day)::timestamp AT TIME ZONE 'UTC')"


def _raw_source(*, cuped: bool, by_language: bool, caps: Caps) -> str:
    lo = f"{_DAY_START} - make_interval(days => :pre_days)" if cuped else "x.ts"
    return f"""{EXPOSED},
win AS (
    SELECT user_id, CAST(:experiment AS text) AS experiment, arm, {lo} AS lo, ts AS split,
           CAST('infinity' AS timestamptz) AS hi
    FROM x
),
{contribution_ctes(windowed=True)},
""" + _statistics_sql(
        "SELECT arm, user_id, language, post, "
        + ", ".join(COMPONENTS)
        + ", ts AS last_ts FROM contrib",
        cuped=cuped,
        by_language=by_language,
        caps=caps,
    )


def _rollup_source(*, cuped: bool, by_language: bool, caps: Caps) -> str:
    columns = ", ".join(f"r.{name}" for name in COMPONENTS)
    days = "r.day > x.day"
    if cuped:
        days = "(r.day > x.day OR (r.day >= x.day - :pre_days AND r.day < x.day))"
    post_only = "" if cuped else "AND r.post"
    source = f"""
    SELECT x.arm, r.user_id, r.language, r.day > x.day AS post, {columns}, r.last_ts
    FROM x JOIN metric_rollup_daily r
        ON r.user_id = x.user_id AND {days} AND r.day < CAST(:until_day AS date)
    UNION ALL
    SELECT x.arm, r.user_id, r.language, r.post, {columns}, r.last_ts
    FROM x JOIN exposure_day_rollup r
        ON r.experiment = :experiment AND r.user_id = x.user_id {post_only}"""
    return f"{EXPOSED},\n" + _statistics_sql(
        source, cuped=cuped, by_language=by_language, caps=caps
    )


# --- the API --------------------------------------------------------------------------------------


def load_experiment_data(
    conn: sqlalchemy.Connection,
    *,
    experiment: str,
    by_language: bool = False,
    source: Source = "rollups",
    cuped: bool = False,
    pre_period_days: int = 14,
    until: dt.date | None = None,
    caps: Caps | None = None,
    quantiles: bool = True,
) -> ExperimentData:
    """Per-arm (and per arm x language) sufficient statistics of every metric of ``experiment``.

    With ``until``, only exposures and events before midnight UTC starting that day count: the
    analysis as it stood then (whole days, so rollups and raw events still agree). ``caps``:
    the cap of each capped metric's per-user contribution (none: nothing capped). Without
    ``quantiles`` the latency quantiles are not loaded (``quantiles`` is then empty).
    """
    caps = dict(caps or {})
    if pre_period_days < 0:
        raise ValueError(f"pre_period_days must be >= 0, got {pre_period_days}")
    hi = dt.datetime.max.replace(tzinfo=dt.UTC)
    if until is not None:
        hi = dt.datetime.combine(until, dt.time(), dt.UTC)
    exposure_groups = conn.execute(
        text(
            f"SELECT arm, count(*) AS users, min(ts) AS first FROM ({EXPOSURE_GROUPS}) g "
            "GROUP BY arm"
        ),
        {"experiment": experiment, "hi": hi},
    ).all()
    # The NULL arm: users exposed to more than one arm, left out of everything below.
    exposures = [row for row in exposure_groups if row.arm is not None]
    multiple_arms = sum(int(row.users) for row in exposure_groups if row.arm is None)
    registered = conn.execute(
        text(
            "SELECT a.name FROM experiment_arms a JOIN experiments e ON e.id = a.experiment_id "
            "WHERE e.key = :experiment ORDER BY a.position"
        ),
        {"experiment": experiment},
    ).scalars()
    users_per_arm = {str(name): 0 for name in registered}
    users_per_arm |= {str(row.arm): int(row.users) for row in sorted(exposures)}
    firsts = [row.first for row in exposures]
    first_exposure = min(firsts) if firsts else None
    params: dict[str, Any] = {
        "experiment": experiment,
        "pre_days": pre_period_days,
        "hi": hi,
        "until_day": until or dt.date.max,
    }
    if first_exposure is None:
        # Nobody exposed yet: every metric of every arm is empty (n = 0), not missing, so the
        # analysis and the gates see "no data" rather than failing on a lookup.
        empty = [
            stats for arm in users_per_arm for stats in metric_stats(None, arm, None, cuped=cuped)
        ]
        no_events = [
            QuantileStats(name, arm, None, p, {}, RatioMoments(0, 0.0, 0.0, 0.0, 0.0, 0.0))
            for arm in users_per_arm
            for name, p in QUANTILES.items()
        ]
        return ExperimentData(
            experiment,
            users_per_arm,
            None,
            None,
            empty,
            no_events,
            source,
            multiple_arms,
            caps=caps,
        )
    # A static lower bound lets the planner skip partitions older than any counted event.
    params["lo"] = first_exposure - dt.timedelta(days=pre_period_days + 1 if cuped else 0)
    if source == "raw":
        statement = _raw_source(cuped=cuped, by_language=by_language, caps=caps)
    elif source == "rollups":
        statement = _rollup_source(cuped=cuped, by_language=by_language, caps=caps)
    else:
        raise ValueError(f"source must be 'raw' or 'rollups', got {source!r}")
    as_of = None
    if source == "rollups":
        as_of = conn.execute(
            text("SELECT watermark FROM rollup_state WHERE id = 1 AND watermark > '-infinity'")
        ).scalar_one_or_none()
    with analysis_settings(conn):
        rows = conn.execute(text("WITH " + statement), params).mappings().all()
        latency = (
            load_latency_quantiles(
                conn, params, source=source, by_language=by_language, arms=list(users_per_arm)
            )
            if quantiles
            else []
        )
    languages = sorted({row["language"] for row in rows if row["language"] is not None})
    found = {(row["arm"], row["language"]): row for row in rows}
    groups: list[str | None] = [None, *languages] if by_language else [None]
    # A ratio metric's all-languages n is every analysed user of the arm, with events or not.
    metrics = [
        stats
        for arm in users_per_arm
        for language in groups
        for stats in metric_stats(
            found.get((arm, language)),
            arm,
            language,
            cuped=cuped,
            users=users_per_arm[arm] if language is None else None,
        )
    ]
    last = [row["last_ts"] for row in rows if row["last_ts"] is not None]
    return ExperimentData(
        experiment=experiment,
        users_per_arm=users_per_arm,
        first_exposure=first_exposure,
        last_event=max(last) if last else None,
        metrics=metrics,
        quantiles=latency,
        source=source,
        multiple_arm_users=multiple_arms,
        rollups_as_of=as_of,
        caps=caps,
    )
