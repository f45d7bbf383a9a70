"""How an experiment's analysis evolved: the sequential (always-valid) CI day by day.

Each point is the full analysis as it stood at midnight UTC (``analyze_experiment(until=)``),
so the always-valid interval seen at each look is exactly what a gate would have seen then.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import sqlalchemy

from experiments.analysis import analyze_experiment
from experiments.config import ExperimentConfig
from experiments.metrics_sql import Source
from experiments.stats import Comparison

# More looks than this are thinned to evenly spaced days (each look is a full analysis).
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


def sequential_history(
    conn: sqlalchemy.Connection,
    config: ExperimentConfig,
    *,
    days: list[dt.date],
    metrics: tuple[str, ...] | None = None,
    source: Source = "rollups",
) -> list[HistoryPoint]:
    """Every treatment arm's comparison of ``metrics`` (default: the primary ones) per day."""
    wanted = set(metrics or config.primary_metrics)
    points: list[HistoryPoint] = []
    for day in days:
        report = analyze_experiment(conn, config, source=source, until=day)
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
