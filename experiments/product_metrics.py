"""Product metrics over time for everyone (not one experiment): the dashboard's overview.

Same definitions as the experiment metrics (``experiments.metrics_sql``), summed over all users
of a period rather than per user: acceptance rate, % code written, CPR@t, latency, errors,
suggestions shown and active users (any suggestion served or shown in the period).

Two sources give the same numbers: ``metric_rollup_daily`` (fast; what the dashboard reads) and
the raw events. The rollups carry no IDE, so a filter on IDEs reads the raw events. Latency
percentiles come from the rollups' histogram (buckets 4% wide) in both cases, so they agree.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any, Literal

import sqlalchemy
from sqlalchemy import text

from experiments.metrics_sql import (
    CHECKPOINTS,
    analysis_settings,
    component_sums,
    contribution_ctes,
    histogram_percentile,
)

Grain = Literal["day", "week"]
GRAINS: tuple[Grain, ...] = ("day", "week")


@dataclasses.dataclass(frozen=True)
class ProductMetrics:
    """The product metrics of one period (and language); a ratio is None without denominator."""

    period: dt.date | None  # None: the whole range
    language: str | None  # None: every language selected
    active_users: int
    suggestions_served: int
    suggestions_shown: int
    suggestions_accepted: int
    acceptance_rate: float | None
    pct_code_written: float | None
    cpr: dict[int, float | None]  # checkpoint (s) -> share persisted
    error_rate: float | None
    latency_mean_ms: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None

    def as_row(self) -> dict[str, Any]:
        """Flat, for a table: one column per figure."""
        row = dataclasses.asdict(self)
        for t, value in row.pop("cpr").items():
            row[f"cpr_{t}"] = value
        return row


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def _metrics(
    period: dt.date | None, language: str | None, sums: Any, histogram: dict[int, int]
) -> ProductMetrics:
    total = sum(histogram.values())
    return ProductMetrics(
        period=period,
        language=language,
        active_users=int(sums["active_users"]),
        suggestions_served=int(sums["served_n"]),
        suggestions_shown=int(sums["shown_n"]),
        suggestions_accepted=int(sums["accepted_n"]),
        acceptance_rate=_ratio(sums["accepted_n"], sums["shown_n"]),
        pct_code_written=_ratio(sums["ai_chars"], sums["typed_chars"] + sums["ai_chars"]),
        cpr={t: _ratio(sums[f"persisted_{t}"], sums[f"reached_{t}"]) for t in CHECKPOINTS},
        error_rate=_ratio(sums["error_n"], sums["served_n"]),
        latency_mean_ms=_ratio(sums["latency_sum"], sums["served_n"]),
        latency_p50_ms=histogram_percentile(histogram, 0.5) if total else None,
        latency_p95_ms=histogram_percentile(histogram, 0.95) if total else None,
    )


def _group_sql(grain: Grain | None, by_language: bool, day: str) -> tuple[str, str]:
    """(select list, group by list) for the period and language keys."""
    period = f"date_trunc('{grain}', {day})::date" if grain else "NULL::date"
    language = "language" if by_language else "NULL::text"
    keys = ", ".join(k for k, used in (("1", grain), ("2", by_language)) if used)
    return f"{period} AS period, {language} AS language", keys


def product_metrics(
    conn: sqlalchemy.Connection,
    *,
    first: dt.date,
    last: dt.date,
    grain: Grain | None = "day",
    by_language: bool = False,
    languages: Sequence[str] = (),
    ides: Sequence[str] = (),
    source: Literal["auto", "raw", "rollups"] = "auto",
) -> list[ProductMetrics]:
    """Product metrics per ``grain`` period (None: the whole range) of the UTC days
    ``first``..``last``, optionally per language and only for some languages or IDEs.

    ``auto`` reads the rollups unless IDEs are filtered (the rollups have no IDE).
    """
    if grain is not None and grain not in GRAINS:
        raise ValueError(f"grain must be one of {GRAINS} or None, got {grain!r}")
    if last < first:
        raise ValueError(f"last ({last}) is before first ({first})")
    if source == "rollups" and ides:
        raise ValueError("ides: the rollups have no IDE; use source='raw' or 'auto'")
    use_raw = source == "raw" or (source == "auto" and bool(ides))
    params: dict[str, Any] = {
        "first": first,
        "last": last,
        "lo": dt.datetime.combine(first, dt.time(), dt.UTC),
        "hi": dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), dt.UTC),
        "languages": list(languages),
        "ides": list(ides),
    }
    with analysis_settings(conn):
        if use_raw:
            sums, buckets = _raw(conn, params, grain, by_language)
        else:
            sums, buckets = _rollups(conn, params, grain, by_language)
    histograms: dict[tuple[Any, Any], dict[int, int]] = {}
    for row in buckets:
        histograms.setdefault((row.period, row.language), {})[int(row.bucket)] = int(row.n)
    result = []
    for row in sums:
        key = (row["period"], row["language"])
        result.append(_metrics(key[0], key[1], row, histograms.get(key, {})))
    return sorted(result, key=lambda m: (m.period or dt.date.min, m.language or ""))


def _filters(params: dict[str, Any], alias: str) -> str:
    parts = []
    if params["languages"]:
        parts.append(f"{alias}.language = ANY(:languages)")
    if params["ides"]:
        parts.append(f"{alias}.ide = ANY(:ides)")
    return " AND ".join(parts)


def _rollups(
    conn: sqlalchemy.Connection, params: dict[str, Any], grain: Grain | None, by_language: bool
) -> tuple[Sequence[Any], Sequence[Any]]:
    keys, group = _group_sql(grain, by_language, "day")
    where = "day BETWEEN :first AND :last"
    if params["languages"]:
        where += " AND language = ANY(:languages)"
    group_by = f"GROUP BY {group}" if group else ""
    sums = (
        conn.execute(
            text(f"""
SELECT {keys}, count(DISTINCT user_id) FILTER (WHERE served_n + shown_n > 0) AS active_users,
       {component_sums()}
FROM metric_rollup_daily WHERE {where} {group_by}"""),
            params,
        )
        .mappings()
        .all()
    )
    buckets = conn.execute(
        text(f"""
SELECT period, language, bucket, sum(n)::bigint AS n FROM (
    SELECT {keys}, unnest(latency_buckets) AS bucket, unnest(latency_counts) AS n
    FROM metric_rollup_daily WHERE {where}
) h GROUP BY period, language, bucket"""),
        params,
    ).all()
    return [s for s in sums if s["active_users"] or s["served_n"]], buckets


def _raw(
    conn: sqlalchemy.Connection, params: dict[str, Any], grain: Grain | None, by_language: bool
) -> tuple[Sequence[Any], Sequence[Any]]:
    keys, group = _group_sql(grain, by_language, "(ts AT TIME ZONE 'UTC')")
    group_by = f"GROUP BY {group}" if group else ""
    ctes = contribution_ctes(windowed=False, where=_filters(params, "ev"))
    sums = (
        conn.execute(
            text(f"""
WITH {ctes}
SELECT {keys}, count(DISTINCT user_id) FILTER (WHERE served_n + shown_n > 0) AS active_users,
       {component_sums()}
FROM contrib {group_by}"""),
            params,
        )
        .mappings()
        .all()
    )
    buckets = conn.execute(
        text(f"""
WITH {ctes}
SELECT period, language, bucket, count(*) AS n FROM (SELECT {keys}, bucket FROM srv) h
GROUP BY period, language, bucket"""),
        params,
    ).all()
    return [s for s in sums if s["active_users"] or s["served_n"]], buckets
