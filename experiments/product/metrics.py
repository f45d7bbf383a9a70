"""Product metrics over time for everyone (not one experiment): the dashboard's overview.

Same definitions as the experiment metrics (``experiments.analysis.metrics_sql``), summed over all
users of a period rather than per user: acceptance rate, % code written, CPR@t, latency, errors,
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

from experiments.analysis.contributions import (
    CHECKPOINTS,
    COMPONENTS,
    analysis_settings,
    component_sums,
    contribution_ctes,
    histogram_percentile,
)
from experiments.analysis.moments_sql import ACTIVE

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
    period: dt.date | None,
    language: str | None,
    sums: Any,
    active_users: int,
    histogram: dict[int, int],
) -> ProductMetrics:
    total = sum(histogram.values())
    return ProductMetrics(
        period=period,
        language=language,
        active_users=active_users,
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


@dataclasses.dataclass(frozen=True)
class ProductOverview:
    """The overview's three views of one range, from one pass over the data."""

    total: ProductMetrics | None  # None: no event in the range
    series: list[ProductMetrics]  # per period
    by_language: list[ProductMetrics]  # per language over the whole range


# A grouping set: the keys grouped on ("period", "language"; none: the whole range).
GroupingSet = tuple[str, ...]


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
    keys = tuple(k for k, used in (("period", grain), ("language", by_language)) if used)
    found = _compute(conn, first, last, grain, [keys], languages, ides, source)
    return found[keys]


def product_overview(
    conn: sqlalchemy.Connection,
    *,
    first: dt.date,
    last: dt.date,
    grain: Grain,
    languages: Sequence[str] = (),
    ides: Sequence[str] = (),
    source: Literal["auto", "raw", "rollups"] = "auto",
) -> ProductOverview:
    """The whole range, each ``grain`` period and each language (as ``product_metrics`` gives
    them) in one pass: grouping sets over one scan."""
    sets: list[GroupingSet] = [(), ("period",), ("language",)]
    found = _compute(conn, first, last, grain, sets, languages, ides, source)
    totals = found[()]
    return ProductOverview(
        total=totals[0] if totals else None,
        series=found[("period",)],
        by_language=found[("language",)],
    )


def _compute(
    conn: sqlalchemy.Connection,
    first: dt.date,
    last: dt.date,
    grain: Grain | None,
    sets: list[GroupingSet],
    languages: Sequence[str],
    ides: Sequence[str],
    source: str,
) -> dict[GroupingSet, list[ProductMetrics]]:
    if grain is not None and grain not in GRAINS:
        raise ValueError(f"grain must be one of {GRAINS} or None, got {grain!r}")
    if last < first:
        raise ValueError(f"last ({last}) is before first ({first})")
    if source not in ("auto", "raw", "rollups"):
        raise ValueError(f"source must be 'auto', 'raw' or 'rollups', got {source!r}")
    if source == "rollups" and ides:
        raise ValueError("ides: the rollups have no IDE; use source='raw' or 'auto'")
    params: dict[str, Any] = {
        "first": first,
        "last": last,
        "lo": dt.datetime.combine(first, dt.time(), dt.UTC),
        "hi": dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), dt.UTC),
        "languages": list(languages),
        "ides": list(ides),
    }
    raw = source == "raw" or (source == "auto" and bool(ides))
    # A key no set groups on is selected as NULL.
    grouped = {key for keys in sets for key in keys}
    select = ", ".join(
        key if key in grouped else f"NULL AS {key}" for key in ("period", "language")
    )
    groups = ", ".join(f"({', '.join(keys)})" for keys in sets)
    users = ", ".join(f"({', '.join((*keys, 'user_id'))})" for keys in sets)
    buckets = ", ".join(f"({', '.join((*keys, 'bucket'))})" for keys in sets)
    with analysis_settings(conn):
        if raw:
            # The raw events' contributions are costly: computed once into a temporary table
            # that the sums and the active users both read.
            ctes = "WITH " + contribution_ctes(windowed=False, where=_filters(params))
            period = _period(grain, "(ts AT TIME ZONE 'UTC')")
            conn.execute(
                text(
                    f"CREATE TEMPORARY TABLE product_rows ON COMMIT DROP AS {ctes} "
                    f"SELECT {period} AS period, language, user_id, {_COLUMNS} FROM contrib"
                ),
                params,
            )
            rows = "SELECT * FROM product_rows"
            latency = f"SELECT {period} AS period, language, bucket, 1 AS n FROM srv"
        else:
            ctes = ""
            period = _period(grain, "day")
            where = "day BETWEEN :first AND :last"
            if languages:
                where += " AND language = ANY(:languages)"
            rows = f"SELECT {period} AS period, language, user_id, {_COLUMNS} "
            rows += f"FROM metric_rollup_daily WHERE {where}"
            latency = (
                f"SELECT {period} AS period, language, unnest(latency_buckets) AS bucket, "
                f"unnest(latency_counts) AS n FROM metric_rollup_daily WHERE {where}"
            )
        sums = (
            conn.execute(
                text(f"""
SELECT {select}, {component_sums()}
FROM ({rows}) r GROUP BY GROUPING SETS ({groups})"""),
                params,
            )
            .mappings()
            .all()
        )
        # Distinct users per group by hashing (user, group) pairs: count(DISTINCT) would sort.
        active = {
            (row.period, row.language): int(row.n)
            for row in conn.execute(
                text(f"""
SELECT period, language, count(*) AS n FROM (
    SELECT {select}, user_id FROM ({rows}) r WHERE {ACTIVE}
    GROUP BY GROUPING SETS ({users})
) a GROUP BY period, language"""),
                params,
            )
        }
        histogram_rows = conn.execute(
            text(f"""{ctes}
SELECT {select}, bucket, sum(n)::bigint AS n
FROM ({latency}) h GROUP BY GROUPING SETS ({buckets})"""),
            params,
        ).all()
        if raw:
            conn.execute(text("DROP TABLE product_rows"))
    histograms: dict[tuple[Any, Any], dict[int, int]] = {}
    for bucket in histogram_rows:
        histograms.setdefault((bucket.period, bucket.language), {})[int(bucket.bucket)] = int(
            bucket.n
        )
    found: dict[GroupingSet, list[ProductMetrics]] = {keys: [] for keys in sets}
    for row in sums:
        key = (row["period"], row["language"])
        if not (active.get(key) or row["served_n"]):
            continue
        keys = tuple(k for k, v in zip(("period", "language"), key, strict=True) if v is not None)
        figures = _metrics(key[0], key[1], row, active.get(key, 0), histograms.get(key, {}))
        found[keys].append(figures)
    for metrics in found.values():
        metrics.sort(key=lambda m: (m.period or dt.date.min, m.language or ""))
    return found


_COLUMNS = ", ".join(COMPONENTS)


def _period(grain: Grain | None, day: str) -> str:
    return f"date_trunc('{grain}', {day})::date" if grain else "NULL::date"


def _filters(params: dict[str, Any]) -> str:
    parts = []
    if params["languages"]:
        parts.append("ev.language = ANY(:languages)")
    if params["ides"]:
        parts.append("ev.ide = ANY(:ides)")
    return " AND ".join(parts)
