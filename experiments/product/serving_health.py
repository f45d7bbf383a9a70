"""Serving health per experiment arm over time: requests, errors and latency.

Read from ``completion_served``, whose ``arms`` column holds the arm of every experiment the
request was in, so a request counts in its own arm even before the user's exposure row lands.
Latency percentiles here are exact (``percentile_disc``, nearest rank) over the period's
requests, errors included (a timeout's latency is what the developer waited).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Literal

import sqlalchemy
from sqlalchemy import text

ServingGrain = Literal["hour", "day"]
SERVING_GRAINS: tuple[ServingGrain, ...] = ("hour", "day")


@dataclasses.dataclass(frozen=True)
class ServingPoint:
    """One arm in one period."""

    period: dt.datetime
    arm: str
    requests: int
    errors: int
    error_rate: float
    latency_mean_ms: float
    latency_p50_ms: float
    latency_p95_ms: float


def serving_by_arm(
    conn: sqlalchemy.Connection,
    *,
    experiment: str,
    start: dt.datetime,
    end: dt.datetime,
    grain: ServingGrain = "hour",
) -> list[ServingPoint]:
    """Requests, errors and latency of each arm of ``experiment`` per period in [start, end)."""
    if grain not in SERVING_GRAINS:
        raise ValueError(f"grain must be one of {SERVING_GRAINS}, got {grain!r}")
    if end <= start:
        raise ValueError(f"end ({end}) is not after start ({start})")
    rows = conn.execute(
        text(f"""
SELECT date_trunc('{grain}', client_ts, 'UTC') AS period, arms ->> :experiment AS arm,
       count(*) AS requests, count(error) AS errors, avg(latency_ms) AS mean,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50,
       percentile_disc(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95
FROM completion_served
WHERE client_ts >= :start AND client_ts < :end AND arms ? :experiment
GROUP BY 1, 2 ORDER BY 1, 2"""),
        {"experiment": experiment, "start": start, "end": end},
    ).all()
    return [
        ServingPoint(
            period=row.period,
            arm=row.arm,
            requests=int(row.requests),
            errors=int(row.errors),
            error_rate=int(row.errors) / int(row.requests),
            latency_mean_ms=float(row.mean),
            latency_p50_ms=float(row.p50),
            latency_p95_ms=float(row.p95),
        )
        for row in rows
    ]
