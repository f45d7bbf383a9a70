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
import re
from collections.abc import Collection, Iterable
from typing import Any, Literal

import sqlalchemy
from sqlalchemy import text

from experiments.analysis.contributions import (
    CHECKPOINTS,
    COMPONENTS,
    analysis_settings,
    contribution_ctes,
    histogram_percentile,
)
from experiments.analysis.stats.moments import (
    CupedMeanMoments,
    CupedRatioMoments,
    MeanMoments,
    Moments,
    RatioMoments,
)

Source = Literal["raw", "rollups"]


@dataclasses.dataclass(frozen=True)
class MetricDef:
    """A metric as SQL over a user's summed components: m / d (ratio) or the mean of m."""

    name: str
    m: str
    d: str | None  # None: a mean metric


METRIC_DEFS: tuple[MetricDef, ...] = (
    MetricDef("acceptance_rate", "accepted_n", "shown_n"),
    MetricDef("acceptance_rate_chars", "accepted_chars", "shown_chars"),
    MetricDef("pct_code_written", "ai_chars", "typed_chars + ai_chars"),
    *(
        MetricDef(f"cpr_{t}{suffix}", f"persisted{suffix}_{t}", f"reached{suffix}_{t}")
        for t in CHECKPOINTS
        for suffix in ("", "_chars")
    ),
    MetricDef("latency_mean", "latency_sum", "served_n"),
    MetricDef("error_rate", "error_n", "served_n"),
    MetricDef("display_rate", "shown_n", "served_n"),
    MetricDef("suggestions_per_user", "shown_n", None),
)
# Who counts in the mean metric: users active after exposure.
ACTIVE = "(served_n + shown_n) > 0"


@dataclasses.dataclass(frozen=True)
class MetricStats:
    """The sufficient statistics of one metric in one arm (and language)."""

    metric: str
    arm: str
    language: str | None  # None: all languages together
    moments: Moments


@dataclasses.dataclass(frozen=True)
class ExperimentData:
    """Everything the statistics need about one experiment; no per-user rows."""

    experiment: str
    users_per_arm: dict[str, int]
    first_exposure: dt.datetime | None
    last_event: dt.datetime | None
    metrics: list[MetricStats]
    latency_p95: dict[tuple[str, str | None], float]
    source: Source
    # For source="rollups": the last refresh's watermark (events after it are not counted yet).
    rollups_as_of: dt.datetime | None = None

    def get(self, metric: str, arm: str, language: str | None = None) -> Moments:
        """The moments of ``metric`` in ``arm`` (and ``language``)."""
        for stats in self.metrics:
            if (stats.metric, stats.arm, stats.language) == (metric, arm, language):
                return stats.moments
        raise KeyError((metric, arm, language))


# --- sufficient statistics ------------------------------------------------------------------------


def _moment_columns(metric: MetricDef, *, cuped: bool) -> list[tuple[str, str]]:
    """(field, SQL aggregate) over per-user rows with post columns c and pre columns c__pre."""

    def pre(expr: str) -> str:
        return " + ".join(f"{part.strip()}__pre" for part in expr.split("+"))

    m, mp = f"({metric.m})", f"({pre(metric.m)})"
    if metric.d is None:
        keep = ACTIVE
        columns = [("n", "count(*)"), ("sum", m), ("sum_squares", f"{m} * {m}")]
        if cuped:
            columns = [
                ("n", "count(*)"),
                ("post_sum", m),
                ("post_sum_squares", f"{m} * {m}"),
                ("pre_sum", mp),
                ("pre_sum_squares", f"{mp} * {mp}"),
                ("post_pre_sum", f"{m} * {mp}"),
            ]
    else:
        d, dp = f"({metric.d})", f"({pre(metric.d)})"
        keep = f"({m} <> 0 OR {d} <> 0)"
        if cuped:
            columns = [
                ("n", "count(*)"),
                ("m_post_sum", m),
                ("m_post_sum_squares", f"{m} * {m}"),
                ("d_post_sum", d),
                ("d_post_sum_squares", f"{d} * {d}"),
                ("m_pre_sum", mp),
                ("m_pre_sum_squares", f"{mp} * {mp}"),
                ("d_pre_sum", dp),
                ("d_pre_sum_squares", f"{dp} * {dp}"),
                ("m_post_d_post_sum", f"{m} * {d}"),
                ("m_pre_d_pre_sum", f"{mp} * {dp}"),
                ("m_post_m_pre_sum", f"{m} * {mp}"),
                ("m_post_d_pre_sum", f"{m} * {dp}"),
                ("d_post_m_pre_sum", f"{d} * {mp}"),
                ("d_post_d_pre_sum", f"{d} * {dp}"),
            ]
        else:
            columns = [
                ("n", "count(*)"),
                ("m_sum", m),
                ("m_sum_squares", f"{m} * {m}"),
                ("d_sum", d),
                ("d_sum_squares", f"{d} * {d}"),
                ("md_sum", f"{m} * {d}"),
            ]
    return [
        (
            field,
            f"{expr} FILTER (WHERE {keep})"
            if field == "n"
            else f"coalesce(sum({expr}) FILTER (WHERE {keep}), 0)",
        )
        for field, expr in columns
    ]


def _moments_type(metric: MetricDef, cuped: bool) -> type[Moments]:
    if metric.d is None:
        return CupedMeanMoments if cuped else MeanMoments
    return CupedRatioMoments if cuped else RatioMoments


def _statistics_sql(source_sql: str, *, cuped: bool, by_language: bool) -> str:
    """Per user (and language) sums, then per (arm, language) and per arm sums over users.

    ``source_sql`` yields (arm, user_id, language, post, the components, last_ts).
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
    active = f"count(*) FILTER (WHERE {ACTIVE})"
    if not by_language:
        return f"""
src AS ({source_sql}),
u AS (
    SELECT arm, user_id, {per_user}, {last_ts} AS last_ts FROM src GROUP BY arm, user_id
)
SELECT arm, NULL AS language, {active} AS active_users, max(last_ts) AS last_ts, {moments}
FROM u GROUP BY arm
"""
    return f"""
src AS ({source_sql}),
ul AS (
    SELECT arm, user_id, language, {per_user}, {last_ts} AS last_ts
    FROM src GROUP BY arm, user_id, language
),
u AS (
    SELECT arm, user_id, {regroup}, max(last_ts) AS last_ts FROM ul GROUP BY arm, user_id
)
SELECT arm, language, {active} AS active_users, max(last_ts) AS last_ts, {moments}
FROM ul GROUP BY arm, language
UNION ALL
SELECT arm, NULL, {active}, max(last_ts), {moments}
FROM u GROUP BY arm
"""


# One row per exposed user: the exposure's event id is a function of (experiment, user), so the
# primary key keeps one row each. Inlined where used, so the planner sees the table's statistics
# (as a CTE it hashes the big side of every join instead).
EXPOSED = """
x AS NOT MATERIALIZED (
    SELECT user_id, arm, client_ts AS ts, (client_ts AT TIME ZONE 'UTC')::date AS day
    FROM exposure WHERE experiment = :experiment AND client_ts < CAST(:hi AS timestamptz)
)"""
# Midnight UTC of the exposure day.
_DAY_START = "((x.day)::timestamp AT TIME ZONE 'UTC')"


def _raw_source(*, cuped: bool, by_language: bool) -> str:
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
    )


def _rollup_source(*, cuped: bool, by_language: bool) -> str:
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
    return f"{EXPOSED},\n" + _statistics_sql(source, cuped=cuped, by_language=by_language)


def _grouping(by_language: bool, *, arm: str, language: str, bucket: str = "") -> str:
    extra = f", {bucket}" if bucket else ""
    if by_language:
        return f"GROUPING SETS (({arm}{extra}), ({arm}, {language}{extra}))"
    return f"{arm}{extra}"


def _p95_raw_sql(by_language: bool) -> str:
    return f"""WITH {EXPOSED}
SELECT x.arm, {"ev.language" if by_language else "NULL AS language"},
       percentile_disc(0.95) WITHIN GROUP (ORDER BY ev.latency_ms) AS p95
FROM x JOIN completion_served ev ON ev.user_id = x.user_id AND ev.client_ts >= x.ts
WHERE ev.client_ts >= CAST(:lo AS timestamptz) AND ev.client_ts < CAST(:hi AS timestamptz)
GROUP BY {_grouping(by_language, arm="x.arm", language="ev.language")}"""


def _p95_rollup_sql(by_language: bool) -> str:
    # unnest() in the select list (not a lateral join) zips the two arrays without a nested loop.
    return f"""WITH {EXPOSED},
h AS (
    SELECT x.arm, r.language, unnest(r.latency_buckets) AS bucket, unnest(r.latency_counts) AS n
    FROM x JOIN metric_rollup_daily r
        ON r.user_id = x.user_id AND r.day > x.day AND r.day < CAST(:until_day AS date)
    UNION ALL
    SELECT x.arm, r.language, unnest(r.latency_buckets), unnest(r.latency_counts)
    FROM x JOIN exposure_day_rollup r
        ON r.experiment = :experiment AND r.user_id = x.user_id AND r.post
)
SELECT arm, {"language" if by_language else "NULL AS language"}, bucket, sum(n)::bigint AS n
FROM h GROUP BY {_grouping(by_language, arm="arm", language="language", bucket="bucket")}"""


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
) -> ExperimentData:
    """Per-arm (and per arm x language) sufficient statistics of every metric of ``experiment``.

    With ``until``, only exposures and events before midnight UTC starting that day count: the
    analysis as it stood then (whole days, so rollups and raw events still agree).
    """
    if pre_period_days < 0:
        raise ValueError(f"pre_period_days must be >= 0, got {pre_period_days}")
    hi = dt.datetime.max.replace(tzinfo=dt.UTC)
    if until is not None:
        hi = dt.datetime.combine(until, dt.time(), dt.UTC)
    exposures = conn.execute(
        text(
            "SELECT arm, count(DISTINCT user_id) AS users, min(client_ts) AS first "
            "FROM exposure WHERE experiment = :experiment AND client_ts < :hi GROUP BY arm"
        ),
        {"experiment": experiment, "hi": hi},
    ).all()
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
        return ExperimentData(experiment, users_per_arm, None, None, empty, {}, source)
    # A static lower bound lets the planner skip partitions older than any counted event.
    params["lo"] = first_exposure - dt.timedelta(days=pre_period_days + 1 if cuped else 0)
    if source == "raw":
        statement = _raw_source(cuped=cuped, by_language=by_language)
        p95_statement = _p95_raw_sql(by_language)
    elif source == "rollups":
        statement = _rollup_source(cuped=cuped, by_language=by_language)
        p95_statement = _p95_rollup_sql(by_language)
    else:
        raise ValueError(f"source must be 'raw' or 'rollups', got {source!r}")
    as_of = None
    if source == "rollups":
        as_of = conn.execute(
            text("SELECT watermark FROM rollup_state WHERE id = 1 AND watermark > '-infinity'")
        ).scalar_one_or_none()
    with analysis_settings(conn):
        rows = conn.execute(text("WITH " + statement), params).mappings().all()
        latency_p95 = _latency_p95(conn, p95_statement, params, source)
    languages = sorted({row["language"] for row in rows if row["language"] is not None})
    found = {(row["arm"], row["language"]): row for row in rows}
    groups: list[str | None] = [None, *languages] if by_language else [None]
    metrics = [
        stats
        for arm in users_per_arm
        for language in groups
        for stats in metric_stats(found.get((arm, language)), arm, language, cuped=cuped)
    ]
    last = [row["last_ts"] for row in rows if row["last_ts"] is not None]
    return ExperimentData(
        experiment=experiment,
        users_per_arm=users_per_arm,
        first_exposure=first_exposure,
        last_event=max(last) if last else None,
        metrics=metrics,
        latency_p95=latency_p95,
        source=source,
        rollups_as_of=as_of,
    )


def metric_stats(
    row: sqlalchemy.RowMapping | None,
    arm: str,
    language: str | None,
    *,
    cuped: bool,
    metrics: Collection[str] | None = None,
) -> list[MetricStats]:
    """Every metric's (or ``metrics``') moments from a row of ``moment_aggregates`` (zeros for
    no row)."""
    stats = []
    for metric in _defs(metrics):
        kind = _moments_type(metric, cuped)
        values: dict[str, Any] = {
            field.name: float(row[f"{metric.name}__{field.name}"]) if row else 0.0
            for field in dataclasses.fields(kind)
        }
        values["n"] = int(values["n"])
        stats.append(MetricStats(metric.name, arm, language, kind(**values)))
    return stats


def moment_aggregates(*, cuped: bool, metrics: Collection[str] | None = None) -> str:
    """The select list of every metric's (or ``metrics``') moments over per-user rows (one
    column per component, plus ``c__pre`` columns with CUPED); read back with ``metric_stats``."""
    return ", ".join(
        f"{sql} AS {metric.name}__{field}"
        for metric in _defs(metrics)
        for field, sql in _moment_columns(metric, cuped=cuped)
    )


def components_of(metrics: Collection[str]) -> tuple[str, ...]:
    """The components ``metrics`` are made of, with those that say who is active."""
    used = {"served_n", "shown_n"}
    for metric in _defs(metrics):
        used |= set(re.findall(r"[a-z_0-9]+", f"{metric.m} {metric.d or ''}"))
    return tuple(name for name in COMPONENTS if name in used)


def _defs(metrics: Collection[str] | None) -> list[MetricDef]:
    if metrics is None:
        return list(METRIC_DEFS)
    unknown = set(metrics) - {metric.name for metric in METRIC_DEFS}
    if unknown:
        raise ValueError(f"metrics: unknown {sorted(unknown)}")
    return [metric for metric in METRIC_DEFS if metric.name in metrics]


def _latency_p95(
    conn: sqlalchemy.Connection, statement: str, params: dict[str, Any], source: Source
) -> dict[tuple[str, str | None], float]:
    rows = conn.execute(text(statement), params).all()
    if source == "raw":
        return {(r.arm, r.language): float(r.p95) for r in rows}
    histograms: dict[tuple[str, str | None], dict[int, int]] = {}
    for r in rows:
        histograms.setdefault((r.arm, r.language), {})[int(r.bucket)] = int(r.n)
    return {
        key: histogram_percentile(counts, 0.95)
        for key, counts in histograms.items()
        if sum(counts.values())
    }


def metric_names() -> Iterable[str]:
    """The metrics ``load_experiment_data`` returns (latency_p95 is in ``latency_p95``)."""
    return (metric.name for metric in METRIC_DEFS)
