"""Latency quantile SQL: per arm (and language) the pooled histogram and per-user CDF moments.

What ``experiments.analysis.stats.quantiles`` needs for each (arm, language, quantile p): the
arm's latency histogram pooled over its users, and the moments over users of (S_i, N_i), S_i
being user i's events below the pooled quantile (with the share f of their events in the bucket
holding it, see ``stats.quantiles.quantile_bucket``) and N_i their events. Per-user rows never
leave the database.

Three statements over a temporary table of per-user-bucket counts (written once from the
source): the pooled histograms; in Python, the bucket holding each quantile and its f
(``quantile_bucket``, the function the statistics read q̂ with); then, in one pass over the
table, each user's S_i and N_i and their sums over users. The all-languages row sums a user's
events over their languages (S_i and N_i are sums over events, so over languages too).

Sources agree exactly: ``raw`` buckets completion_served events at or after the user's exposure
(as ``contributions`` buckets them for the rollups), ``rollups`` reads the same buckets from
``metric_rollup_daily`` (days after the exposure day, before ``until_day``) and
``exposure_day_rollup`` (the exposure day from the exposure instant on).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

import sqlalchemy
from sqlalchemy import text

from experiments.analysis.contributions import _latency_bucket
from experiments.analysis.exposures_sql import EXPOSED
from experiments.analysis.stats.moments import RatioMoments
from experiments.analysis.stats.quantiles import (
    QuantileEstimate,
    quantile_bucket,
    quantile_estimate,
)

DEFAULT_QUANTILES = (0.5, 0.95, 0.99)


@dataclasses.dataclass(frozen=True)
class QuantileStats:
    """What one quantile of one arm (and language) needs: the histogram and the moments.

    ``at_quantile`` is over users with events: m = S_i (events below the pooled quantile), d = N_i.
    """

    metric: str
    arm: str
    language: str | None  # None: all languages together
    p: float
    histogram: Mapping[int, int]
    at_quantile: RatioMoments
    # Σ (S_i − p·N_i)⁴ over users: the t reference's degrees of freedom (None: users − 1).
    residual_fourth: float | None = None

    def estimate(self, alpha: float = 0.05) -> QuantileEstimate:
        """The quantile with its user-clustered (1 − alpha) CI."""
        return quantile_estimate(
            self.histogram,
            self.at_quantile,
            self.p,
            alpha,
            residual_fourth=self.residual_fourth,
        )


def quantile_metric(p: float) -> str:
    """The catalog name of the p quantile: latency_p50, latency_p95, latency_p99."""
    return f"latency_p{p * 100:g}"


# The per-user-bucket counts, written once and read twice (pooled histogram, per-user sums).
# A temporary table rather than a CTE: ANALYZE gives the planner its true size, so it hashes the
# few thresholds and aggregates users by hash (a CTE's guessed size made it sort ~1M rows).
_TABLE = "latency_user_buckets"


def _source(source: Literal["raw", "rollups"]) -> str:
    """(arm, user_id, language, bucket, n): a user's served completions per latency bucket."""
    if source == "raw":
        return f"""
    SELECT x.arm, ev.user_id, ev.language, {_latency_bucket("ev.latency_ms")} AS bucket, 1 AS n
    FROM x JOIN completion_served ev ON ev.user_id = x.user_id AND ev.client_ts >= x.ts
    WHERE ev.client_ts >= CAST(:lo AS timestamptz) AND ev.client_ts < CAST(:hi AS timestamptz)"""
    if source == "rollups":
        # One join with the exposed users for both tables (x is an aggregate, built once per
        # join), and days up to the first exposure's (``lo``) dropped by the scan: nobody's post
        # period has them. unnest() in the select list zips the arrays without a nested loop.
        return """
    SELECT x.arm, r.user_id, r.language, unnest(r.latency_buckets)::int AS bucket,
           unnest(r.latency_counts) AS n
    FROM x JOIN (
        SELECT user_id, language, day, latency_buckets, latency_counts FROM metric_rollup_daily
        WHERE day < CAST(:until_day AS date)
            AND day > (CAST(:lo AS timestamptz) AT TIME ZONE 'UTC')::date
        UNION ALL
        SELECT user_id, language, NULL, latency_buckets, latency_counts FROM exposure_day_rollup
        WHERE experiment = :experiment AND post
    ) r ON r.user_id = x.user_id AND (r.day IS NULL OR r.day > x.day)"""
    raise ValueError(f"source must be 'raw' or 'rollups', got {source!r}")


def _below(qs: range, k: str, f: str, alias: str) -> str:
    """Per quantile i: Σ over a user's rows of their events below the quantile (bucket k, f)."""
    return ", ".join(
        f"sum(CASE WHEN s.bucket < t.{k}{i} THEN s.n "
        f"WHEN s.bucket = t.{k}{i} THEN s.n * t.{f}{i} ELSE 0 END) AS {alias}{i}"
        for i in qs
    )


def _moments(qs: range, alias: str) -> str:
    sums = ", ".join(
        f"sum({alias}{i}) AS s{i}_sum, sum({alias}{i} * {alias}{i}) AS s{i}_squares, "
        f"sum({alias}{i} * n) AS s{i}_n_sum, "
        f"sum(power({alias}{i} - CAST(:p{i} AS float8) * n, 4)) AS s{i}_residual_fourth"
        for i in qs
    )
    return f"count(*) AS users, sum(n) AS n_sum, sum(n * n) AS n_squares, {sums}"


def _moments_statement(*, by_language: bool, count: int) -> str:
    """Per group g (an arm, or an arm's language): Σ over users of N_i, N_i², and of S_i, S_i²,
    S_i·N_i, (S_i − p·N_i)⁴ for each quantile, against the thresholds bound by
    ``_bind_thresholds`` (one row per (arm, language): g, k_i, f_i, and with languages the
    arm's all-languages group og, ok_i, of_i)."""
    qs = range(count)
    columns = ["arm", *(["language", "g", "og"] if by_language else ["g"])]
    types = ["text", *(["text", "int", "int"] if by_language else ["int"])]
    for prefix in ("", "o") if by_language else ("",):
        for i in qs:
            columns += [f"{prefix}k{i}", f"{prefix}f{i}"]
            types += ["int", "float8"]
    arrays = ", ".join(f"CAST(:{c} AS {t}[])" for c, t in zip(columns, types, strict=True))
    th = f"th AS (SELECT * FROM unnest({arrays}) AS t({', '.join(columns)}))"
    if not by_language:
        return f"""WITH {th},
u AS (
    SELECT t.g, s.user_id, sum(s.n)::float8 AS n, {_below(qs, "k", "f", "s")}
    FROM {_TABLE} s JOIN th t ON t.arm = s.arm
    GROUP BY t.g, s.user_id
)
SELECT g, {_moments(qs, "s")} FROM u GROUP BY g"""
    # One pass over the rows gives each user-language both its language's S_i and its part of
    # the user's all-languages S_i (all-languages thresholds); a user's parts then add up.
    return f"""WITH {th},
ul AS (
    SELECT t.g, t.og, s.user_id, sum(s.n)::float8 AS n, {_below(qs, "k", "f", "s")},
           {_below(qs, "ok", "of", "o")}
    FROM {_TABLE} s JOIN th t ON t.arm = s.arm AND t.language = s.language
    GROUP BY t.g, t.og, s.user_id
),
u AS (
    SELECT og AS g, user_id, sum(n) AS n, {", ".join(f"sum(o{i}) AS o{i}" for i in qs)}
    FROM ul GROUP BY og, user_id
)
SELECT g, {_moments(qs, "s")} FROM ul GROUP BY g
UNION ALL
SELECT g, {_moments(qs, "o")} FROM u GROUP BY g"""


Key = tuple[str, str | None]


def _histograms(
    rows: Sequence[sqlalchemy.Row[Any]], *, by_language: bool
) -> dict[Key, dict[int, int]]:
    """Per (arm, language) and per (arm, None) the pooled histogram, from per-language rows."""
    histograms: dict[Key, dict[int, int]] = {}
    for row in rows:
        arm, language, bucket, n = str(row.arm), str(row.language), int(row.bucket), int(row.n)
        keys: list[Key] = [(arm, None), (arm, language)] if by_language else [(arm, None)]
        for key in keys:
            counts = histograms.setdefault(key, {})
            counts[bucket] = counts.get(bucket, 0) + n
    return histograms


def _bind_thresholds(
    histograms: dict[Key, dict[int, int]], quantiles: Sequence[float], *, by_language: bool
) -> dict[str, list[Any]]:
    """The threshold rows of ``_moments_statement`` as arrays; group g is ``list(histograms)``'s
    index of its key."""
    index = {key: g for g, key in enumerate(histograms)}
    keys = [key for key in histograms if (key[1] is not None) == by_language]
    bound: dict[str, list[Any]] = {"arm": [arm for arm, _ in keys], "g": [index[k] for k in keys]}
    if by_language:
        bound["language"] = [language for _, language in keys]
        bound["og"] = [index[(arm, None)] for arm, _ in keys]
    targets: list[tuple[str, list[Key]]] = [("", keys)]
    if by_language:
        targets.append(("o", [(arm, None) for arm, _ in keys]))
    for i, p in enumerate(quantiles):
        # The same function places the quantile for the statistics, so S_i is taken exactly
        # where quantile_estimate reads q̂.
        for prefix, where in targets:
            placed = [quantile_bucket(histograms[key], p) for key in where]
            bound[f"{prefix}k{i}"] = [bucket for bucket, _ in placed]
            bound[f"{prefix}f{i}"] = [share for _, share in placed]
    return bound


def load_latency_quantiles(
    conn: sqlalchemy.Connection,
    params: Mapping[str, Any],
    *,
    source: Literal["raw", "rollups"],
    by_language: bool,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    arms: Collection[str] = (),
) -> list[QuantileStats]:
    """Per (arm, language, quantile) the pooled latency histogram and the moments at it.

    ``params`` are ``metrics_sql.load_experiment_data``'s (experiment, hi, lo, until_day). Every
    arm of ``arms`` is reported (with an empty histogram if it has no events), and with
    ``by_language`` every language any arm has, all-languages rows first. Run it inside
    ``contributions.analysis_settings``, in a transaction (it uses a temporary table).
    """
    if not quantiles:
        raise ValueError("quantiles: none asked for")
    if any(not 0.0 < p < 1.0 for p in quantiles) or len(set(quantiles)) != len(quantiles):
        raise ValueError(f"quantiles must be distinct and in (0, 1), got {list(quantiles)}")
    conn.execute(
        text(f"CREATE TEMPORARY TABLE {_TABLE} ON COMMIT DROP AS WITH {EXPOSED} {_source(source)}"),
        dict(params),
    )
    conn.execute(text(f"ANALYZE {_TABLE}"))
    pooled = conn.execute(
        text(f"SELECT arm, language, bucket, sum(n) AS n FROM {_TABLE} GROUP BY 1, 2, 3")
    ).all()
    histograms = _histograms(pooled, by_language=by_language)
    rows: Sequence[sqlalchemy.RowMapping] = []
    if histograms:
        bound: dict[str, Any] = {f"p{i}": float(p) for i, p in enumerate(quantiles)}
        bound |= _bind_thresholds(histograms, quantiles, by_language=by_language)
        statement = _moments_statement(by_language=by_language, count=len(quantiles))
        rows = conn.execute(text(statement), bound).mappings().all()
    conn.execute(text(f"DROP TABLE {_TABLE}"))
    keys = list(histograms)
    found = {keys[row["g"]]: row for row in rows}
    arm_names = [*arms, *sorted({arm for arm, _ in histograms} - set(arms))]
    languages = sorted({language for _, language in histograms if language is not None})
    groups: list[str | None] = [None, *languages] if by_language else [None]
    return [
        _stats(found.get((arm, language)), histograms.get((arm, language), {}), arm, language, i, p)
        for arm in arm_names
        for language in groups
        for i, p in enumerate(quantiles)
    ]


def _stats(
    row: sqlalchemy.RowMapping | None,
    histogram: dict[int, int],
    arm: str,
    language: str | None,
    i: int,
    p: float,
) -> QuantileStats:
    if row is None:
        empty = RatioMoments(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        return QuantileStats(quantile_metric(p), arm, language, p, {}, empty)
    moments = RatioMoments(
        n=int(row["users"]),
        m_sum=float(row[f"s{i}_sum"]),
        m_sum_squares=float(row[f"s{i}_squares"]),
        d_sum=float(row["n_sum"]),
        d_sum_squares=float(row["n_squares"]),
        md_sum=float(row[f"s{i}_n_sum"]),
    )
    residual_fourth = float(row[f"s{i}_residual_fourth"])
    return QuantileStats(quantile_metric(p), arm, language, p, histogram, moments, residual_fourth)
