"""How an experiment's analysis evolved: the sequential (always-valid) CI day by day.

Each look is the analysis as it stood at midnight UTC: exactly ``analyze_experiment(until=day)``
(rollups, no CUPED, all languages together), so the always-valid interval seen at each look is
the one a gate would have seen then. All looks come from one statement: every rollup row is
summed into the first look after its day, then each user's sums accumulate look by look.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection
from typing import Any

import sqlalchemy
from sqlalchemy import text

from experiments.analysis.analyze import analyze_data, caps_for
from experiments.analysis.contributions import analysis_settings
from experiments.analysis.exposures_sql import EXPOSED
from experiments.analysis.metrics_sql import ExperimentData
from experiments.analysis.moments_sql import (
    Caps,
    components_of,
    metric_names,
    metric_stats,
    metric_values,
    moment_aggregates,
)
from experiments.analysis.stats import Comparison
from experiments.definitions.config import ExperimentConfig
from experiments.definitions.status import Status

# More looks than this are thinned to evenly spaced days.
MAX_LOOKS = 14


@dataclasses.dataclass(frozen=True)
class HistoryPoint:
    """One metric in one treatment arm as of ``as_of``."""

    as_of: dt.date
    metric: str
    arm: str
    users: int
    comparison: Comparison


def look_days(first_exposure: dt.datetime, last_event: dt.datetime) -> list[dt.date]:
    """The midnights to look at: each day after the first exposure up to the day after the
    last event (that look sees everything), thinned to at most ``MAX_LOOKS``."""
    first = first_exposure.astimezone(dt.UTC).date() + dt.timedelta(days=1)
    last = last_event.astimezone(dt.UTC).date() + dt.timedelta(days=1)
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    if len(days) > MAX_LOOKS:
        step = (len(days) - 1) / (MAX_LOOKS - 1)
        days = [days[round(i * step)] for i in range(MAX_LOOKS)]
    return days


def _history_sql(metrics: Collection[str], caps: Caps) -> str:
    # Only the components the metrics need are carried: the running sums are the costly part.
    components = components_of(metrics)
    sums = ", ".join(f"sum({c})::float8 AS {c}" for c in components)
    running = ", ".join(
        f"sum(coalesce(b.{c}, 0)) OVER (PARTITION BY g.user_id ORDER BY g.look) AS {c}"
        for c in components
    )
    columns = ", ".join(f"r.{c}" for c in components)
    return f"""WITH {EXPOSED},
looks AS (SELECT unnest(CAST(:looks AS date[])) AS look),
src AS (
    SELECT x.arm, x.user_id, r.day, {columns}
    FROM x JOIN metric_rollup_daily r
        ON r.user_id = x.user_id AND r.day > x.day AND r.day < CAST(:last_look AS date)
    UNION ALL
    SELECT x.arm, x.user_id, x.day, {columns}
    FROM x JOIN exposure_day_rollup r
        ON r.experiment = :experiment AND r.user_id = x.user_id AND r.post
),
bucketed AS (
    SELECT user_id, (SELECT min(look) FROM looks WHERE look > src.day) AS look, {sums}
    FROM src GROUP BY 1, 2
),
grid AS (SELECT x.arm, x.user_id, l.look FROM x JOIN looks l ON l.look > x.day),
u AS (
    SELECT g.arm, g.user_id, g.look, {running}
    FROM grid g LEFT JOIN bucketed b ON b.user_id = g.user_id AND b.look = g.look
),
{metric_values("u", name="uv", metrics=metrics, caps=caps, group=("look",))}
SELECT look, arm, count(*) AS users, count(*) FILTER (WHERE active) AS active_users,
       {moment_aggregates(cuped=False, metrics=metrics)}
FROM uv GROUP BY look, arm"""


def load_history_data(
    conn: sqlalchemy.Connection,
    *,
    experiment: str,
    arms: list[str],
    looks: list[dt.date],
    metrics: Collection[str],
    caps: Caps | None = None,
) -> dict[dt.date, ExperimentData]:
    """The sufficient statistics of ``metrics`` (all languages) as of each midnight in
    ``looks``, from the rollups: each equal to ``load_experiment_data(until=look)``'s."""
    if not looks:
        return {}
    looks = sorted(looks)
    params: dict[str, Any] = {
        "experiment": experiment,
        "looks": looks,
        "last_look": looks[-1],
        "hi": dt.datetime.combine(looks[-1], dt.time(), dt.UTC),
    }
    with analysis_settings(conn):
        caps = {metric: cap for metric, cap in (caps or {}).items() if metric in metrics}
        rows = conn.execute(text(_history_sql(metrics, caps)), params).mappings().all()
    firsts = conn.execute(
        text(
            "SELECT min(client_ts) FROM exposure WHERE experiment = :experiment AND client_ts < :hi"
        ),
        params,
    ).scalar_one()
    found = {(row["look"], row["arm"]): row for row in rows}
    history = {}
    for look in looks:
        users = dict.fromkeys(arms, 0)
        users |= {arm: int(row["users"]) for (day, arm), row in found.items() if day == look}
        history[look] = ExperimentData(
            experiment=experiment,
            users_per_arm=users,
            first_exposure=firsts if users and sum(users.values()) else None,
            last_event=None,
            metrics=[
                stats
                for arm in users
                for stats in metric_stats(
                    found.get((look, arm)), arm, None, cuped=False, metrics=metrics
                )
            ],
            quantiles=[],
            source="rollups",
            caps=caps,
        )
    return history


def sequential_history(
    conn: sqlalchemy.Connection,
    config: ExperimentConfig,
    *,
    days: list[dt.date],
    metrics: tuple[str, ...] | None = None,
    capping: bool = True,
) -> list[HistoryPoint]:
    """Every treatment arm's comparison of ``metrics`` (default: the primary ones) per day."""
    # Latency quantiles are read off histograms the history does not carry.
    wanted = [m for m in metrics or config.primary_metrics if m in set(metric_names())]
    arms = [arm.name for arm in config.arms]
    history = load_history_data(
        conn,
        experiment=config.key,
        arms=arms,
        looks=days,
        metrics=wanted,
        caps=caps_for(config, capping),
    )
    # Only the comparisons are wanted: no guardrail tests (their metrics are not loaded).
    tested = config.model_copy(update={"guardrails": ()})
    points: list[HistoryPoint] = []
    for day, data in sorted(history.items()):
        report = analyze_data(
            data, tested, status=Status.RUNNING.value, coverage=1.0, by_language=False
        )
        points += [
            HistoryPoint(
                as_of=day,
                metric=result.metric,
                arm=result.arm,
                users=report.users_per_arm.get(result.arm, 0),
                comparison=result.comparison,
            )
            for result in report.results
            if result.metric in wanted and result.language is None
        ]
    return points
