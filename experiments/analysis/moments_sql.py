"""Per-user metric values and their moments, as SQL over rows of per-user metric components.

Every analysis statement ends the same way: rows of one user each (per arm, and per language or
per look), holding the user's summed components (``contributions.COMPONENTS``, with ``c__pre``
columns under CUPED). ``metric_values`` turns them into each metric's per-user numerator
``{metric}__m`` and denominator ``{metric}__d`` (``__mp`` / ``__dp`` for the pre-period),
capped as configured (``experiments.definitions.capping``); ``moment_aggregates`` sums those
into the sufficient statistics the tests consume, read back by ``metric_stats``.

Who counts (the n of the moments): a ratio metric counts every user of the row's group (users
with 0 / 0 contribute zeros to every sum, as gbstats counts every user of a variation); a mean
metric counts the active users (any suggestion served or shown after exposure).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import sqlalchemy

from experiments.analysis.contributions import CHECKPOINTS, COMPONENTS
from experiments.analysis.stats.moments import (
    CupedMeanMoments,
    CupedRatioMoments,
    MeanMoments,
    Moments,
    RatioMoments,
)
from experiments.definitions.capping import Capping


@dataclasses.dataclass(frozen=True)
class MetricDef:
    """A metric as SQL over a user's summed components: m / d (ratio) or the mean of m."""

    name: str
    m: str
    d: str | None  # None: a mean metric


METRIC_DEFS: tuple[MetricDef, ...] = (
    MetricDef("acceptance_rate", "accepted_n", "shown_n"),
    MetricDef("acceptance_rate_chars", "accepted_chars", "shown_chars"),
    MetricDef("acceptance_per_opportunity", "accepted_n", "served_n"),
    MetricDef("pct_code_written", "ai_chars", "typed_chars + ai_chars"),
    *(
        MetricDef(f"cpr_{t}{suffix}", f"persisted{suffix}_{t}", f"reached{suffix}_{t}")
        for t in CHECKPOINTS
        for suffix in ("", "_chars")
    ),
    MetricDef("latency_mean_per_completion", "latency_sum", "served_n"),
    MetricDef("error_rate", "error_n", "served_n"),
    MetricDef("display_rate", "shown_n", "served_n"),
    MetricDef("suggestions_per_user", "shown_n", None),
)
# Who counts in the mean metric: users active after exposure.
ACTIVE = "(served_n + shown_n) > 0"
# Metric -> its cap; metrics not named are not capped.
Caps = Mapping[str, Capping]


def metric_names() -> tuple[str, ...]:
    """The user-level metrics (ratio and mean); quantiles are in ``quantiles_sql``."""
    return tuple(metric.name for metric in METRIC_DEFS)


def _defs(metrics: Collection[str] | None) -> list[MetricDef]:
    if metrics is None:
        return list(METRIC_DEFS)
    unknown = set(metrics) - set(metric_names())
    if unknown:
        raise ValueError(f"metrics: unknown {sorted(unknown)}")
    return [metric for metric in METRIC_DEFS if metric.name in metrics]


def components_of(metrics: Collection[str]) -> tuple[str, ...]:
    """The components ``metrics`` are made of, with those that say who is active."""
    used = {"served_n", "shown_n"}
    for metric in _defs(metrics):
        used |= set(re.findall(r"[a-z_0-9]+", f"{metric.m} {metric.d or ''}"))
    return tuple(name for name in COMPONENTS if name in used)


def _pre(expr: str) -> str:
    return " + ".join(f"{part.strip()}__pre" for part in expr.split("+"))


def _weight(metric: MetricDef, pre: bool) -> str:
    """What the cap applies to: the denominator of a ratio metric, the value of a mean one."""
    expr = metric.d if metric.d is not None else metric.m
    return f"({_pre(expr) if pre else expr})"


def _cap_key(metric: MetricDef, pre: bool, cap: Capping) -> tuple[str, float | None]:
    """What a percentile cap is computed from: metrics sharing it share one sort."""
    return (_weight(metric, pre), cap.percentile)


def metric_values(
    rows: str,
    *,
    name: str,
    metrics: Collection[str] | None = None,
    caps: Caps | None = None,
    cuped: bool = False,
    group: Sequence[str] = (),
    keep: Sequence[str] | None = None,
) -> str:
    """CTEs ending in ``{name}``: the rows of CTE ``rows`` (one user each) with every metric's
    (capped) per-user values added.

    Percentile caps are computed over the users of each ``group`` (e.g. ``("language",)``,
    ``("look",)``; none: all rows) pooled over arms, leaving out users whose capped quantity is
    0. A ratio metric's user with denominator d above the cap C contributes (m·C/d, C).
    ``keep``: the columns of ``rows`` carried along (None: all of them).
    """
    defs = _defs(metrics)
    caps = caps or {}
    periods = (False, True) if cuped else (False,)
    # One percentile per distinct (quantity, percentile): served completions weigh five metrics,
    # and each ordered-set aggregate sorts every user row again.
    cap_columns: dict[tuple[str, float | None], str] = {}
    for metric in defs:
        cap = caps.get(metric.name)
        if cap is None or cap.percentile is None:
            continue
        for pre in periods:
            cap_columns.setdefault(_cap_key(metric, pre, cap), f"cap{len(cap_columns)}")
    percentiles = [
        f"percentile_disc({percentile}) WITHIN GROUP (ORDER BY {weight}) "
        f"FILTER (WHERE {weight} > 0) AS {column}"
        for (weight, percentile), column in cap_columns.items()
    ]
    ctes = []
    source = f"{rows} s"
    if percentiles:
        keys = ", ".join(group)
        select = ", ".join([*group, *percentiles])
        ctes.append(
            f"{name}__caps AS (SELECT {select} FROM {rows}"
            + (f" GROUP BY {keys})" if group else ")")
        )
        on = " AND ".join(f"c.{key} = s.{key}" for key in group) or "true"
        source = f"{rows} s LEFT JOIN {name}__caps c ON {on}"

    def cap_of(metric: MetricDef, pre: bool) -> str | None:
        cap = caps.get(metric.name)
        if cap is None:
            return None
        if cap.absolute is not None:
            return f"CAST({cap.absolute!r} AS float8)"
        return f"c.{cap_columns[_cap_key(metric, pre, cap)]}"

    columns = []
    for metric in defs:
        for pre in periods:
            suffix = "p" if pre else ""
            m = f"({_pre(metric.m) if pre else metric.m})"
            bound = cap_of(metric, pre)
            weight = _weight(metric, pre)
            if metric.d is None:
                value = m if bound is None else f"least({m}, {bound})"
                columns.append(f"{value} AS {metric.name}__m{suffix}")
                continue
            if bound is None:
                columns += [
                    f"{m} AS {metric.name}__m{suffix}",
                    f"{weight} AS {metric.name}__d{suffix}",
                ]
                continue
            # least() ignores a NULL cap (no user with a positive value): nothing is capped.
            columns += [
                f"CASE WHEN {weight} > {bound} THEN {m} * {bound} / {weight} ELSE {m} END "
                f"AS {metric.name}__m{suffix}",
                f"least({weight}, {bound}) AS {metric.name}__d{suffix}",
            ]
    carried = "s.*" if keep is None else ", ".join(f"s.{column}" for column in keep)
    # With caps, OFFSET 0 keeps the subquery from being flattened: each value is computed once
    # per row and read as a column by the aggregates (flattened, every aggregate naming a capped
    # value evaluates its CASE again: 1.7 s more at 10M events).
    fence = " OFFSET 0" if caps else ""
    ctes.append(
        f"{name} AS (SELECT {carried}, {ACTIVE} AS active, {', '.join(columns)} "
        f"FROM {source}{fence})"
    )
    return ",\n".join(ctes)


def _moment_columns(metric: MetricDef, *, cuped: bool) -> list[tuple[str, str]]:
    """(field, SQL aggregate) over rows of ``metric_values``."""
    m, mp = f"{metric.name}__m", f"{metric.name}__mp"
    d, dp = f"{metric.name}__d", f"{metric.name}__dp"
    if metric.d is None:
        if cuped:
            columns = [
                ("post_sum", m),
                ("post_sum_squares", f"{m} * {m}"),
                ("pre_sum", mp),
                ("pre_sum_squares", f"{mp} * {mp}"),
                ("post_pre_sum", f"{m} * {mp}"),
            ]
        else:
            columns = [("sum", m), ("sum_squares", f"{m} * {m}")]
        return [("n", "count(*) FILTER (WHERE active)")] + [
            (field, f"coalesce(sum({expr}) FILTER (WHERE active), 0)") for field, expr in columns
        ]
    if cuped:
        columns = [
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
            *_third_order(m, d),
        ]
    else:
        columns = [
            ("m_sum", m),
            ("m_sum_squares", f"{m} * {m}"),
            ("d_sum", d),
            ("d_sum_squares", f"{d} * {d}"),
            ("md_sum", f"{m} * {d}"),
            *_third_order(m, d),
        ]
    return [("n", "count(*)")] + [(field, f"coalesce(sum({expr}), 0)") for field, expr in columns]


def _third_order(m: str, d: str) -> list[tuple[str, str]]:
    return [
        ("m2d_sum", f"{m} * {m} * {d}"),
        ("md2_sum", f"{m} * {d} * {d}"),
        ("d3_sum", f"{d} * {d} * {d}"),
    ]


def moment_aggregates(*, cuped: bool, metrics: Collection[str] | None = None) -> str:
    """The select list of every metric's (or ``metrics``') moments over rows of
    ``metric_values``; read back with ``metric_stats``."""
    return ", ".join(
        f"{sql} AS {metric.name}__{field}"
        for metric in _defs(metrics)
        for field, sql in _moment_columns(metric, cuped=cuped)
    )


def _moments_type(metric: MetricDef, cuped: bool) -> type[Moments]:
    if metric.d is None:
        return CupedMeanMoments if cuped else MeanMoments
    return CupedRatioMoments if cuped else RatioMoments


@dataclasses.dataclass(frozen=True)
class MetricStats:
    """The sufficient statistics of one metric in one arm (and language)."""

    metric: str
    arm: str
    language: str | None  # None: all languages together
    moments: Moments


def metric_stats(
    row: sqlalchemy.RowMapping | None,
    arm: str,
    language: str | None,
    *,
    cuped: bool,
    metrics: Collection[str] | None = None,
    users: int | None = None,
) -> list[MetricStats]:
    """Every metric's (or ``metrics``') moments from a row of ``moment_aggregates`` (zeros for
    no row). ``users``: the users of the group, when some have no row at all (exposed users
    without events): a ratio metric's n then counts them too (they add zeros to every sum)."""
    stats = []
    for metric in _defs(metrics):
        kind = _moments_type(metric, cuped)
        values: dict[str, Any] = {
            field.name: float(row[f"{metric.name}__{field.name}"]) if row else 0.0
            for field in dataclasses.fields(kind)
        }
        values["n"] = int(values["n"])
        if users is not None and metric.d is not None:
            values["n"] = max(values["n"], users)
        stats.append(MetricStats(metric.name, arm, language, kind(**values)))
    return stats
