"""Latency quantile SQL on real PostgreSQL: raw events and rollups agree, numpy agrees, and a
tail regression that leaves the mean alone is caught.

The data are ``simulator.synthetic``'s (latencies lognormal, independent of the user), so the
figures here are on data the project made itself.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pytest
from sqlalchemy import Connection, text

from experiments.analysis.contributions import analysis_settings
from experiments.analysis.exposures_sql import EXPOSED
from experiments.analysis.quantiles_sql import QuantileStats, load_latency_quantiles
from experiments.analysis.rollups import refresh_rollups
from experiments.analysis.stats import compare
from experiments.analysis.stats.moments import RatioMoments
from experiments.analysis.stats.quantiles import (
    BUCKET_BASE,
    compare_quantiles,
    quantile_bucket,
    quantile_non_inferiority,
)
from experiments.analysis.stats.results import ResultCode
from simulator.synthetic import SyntheticConfig, load_synthetic

EXPERIMENT = "synthetic"
PS = (0.5, 0.95, 0.99)
Key = tuple[str, str | None, float]


def _load_synthetic(conn: Connection, **options: Any) -> None:
    driver = conn.connection.driver_connection
    assert driver is not None
    config = SyntheticConfig(
        experiment=EXPERIMENT, users=300, events=16_000, days=5.0, pre_days=1.0
    )
    load_synthetic(driver, dataclasses.replace(config, **options))


@pytest.fixture
def synthetic(conn: Connection) -> Connection:
    """300 users, ~4,000 served completions over 5 days (the last 4 exposed), 20 % of users
    in two languages; rollups refreshed."""
    _load_synthetic(conn)
    refresh_rollups(conn)
    return conn


def params(conn: Connection) -> dict[str, Any]:
    """What ``metrics_sql.load_experiment_data`` binds, for the whole experiment so far."""
    first = conn.execute(
        text("SELECT min(client_ts) FROM exposure WHERE experiment = :e"), {"e": EXPERIMENT}
    ).scalar_one()
    return {
        "experiment": EXPERIMENT,
        "hi": dt.datetime.max.replace(tzinfo=dt.UTC),
        "lo": first,
        "until_day": dt.date.max,
        "pre_days": 14,
    }


def load(
    conn: Connection,
    source: Literal["raw", "rollups"],
    *,
    by_language: bool = True,
    arms: tuple[str, ...] = (),
) -> dict[Key, QuantileStats]:
    with analysis_settings(conn):
        found = load_latency_quantiles(
            conn, params(conn), source=source, by_language=by_language, arms=arms
        )
    return {(q.arm, q.language, q.p): q for q in found}


@pytest.mark.parametrize("by_language", [False, True], ids=["overall", "by_language"])
def test_rollups_equal_raw(synthetic: Connection, by_language: bool) -> None:
    raw = load(synthetic, "raw", by_language=by_language)
    rollups = load(synthetic, "rollups", by_language=by_language)
    assert list(raw) == list(rollups)
    languages = {language for _, language, _ in raw}
    assert (len(languages) > 5) if by_language else (languages == {None})
    for key, a in raw.items():
        b = rollups[key]
        assert a.metric == f"latency_p{round(key[2] * 100)}"
        assert a.histogram == b.histogram, key
        assert a.at_quantile.n == b.at_quantile.n > 10
        # Counts are exact; S_i holds a float share, summed in another order.
        assert dataclasses.astuple(a.at_quantile) == pytest.approx(
            dataclasses.astuple(b.at_quantile), rel=1e-12
        ), key
        assert a.residual_fourth == pytest.approx(b.residual_fourth, rel=1e-9), key
        x, y = a.estimate(), b.estimate()
        assert (x.code, x.users, x.events, x.value) == (y.code, y.users, y.events, y.value)
        assert (x.se, x.dof) == pytest.approx((y.se, y.dof), rel=1e-9)
        assert x.ci == pytest.approx(y.ci, rel=1e-9)


def _events(conn: Connection) -> list[Any]:
    """Every served completion counted: analysed users' events from their exposure on."""
    rows = conn.execute(
        text(f"""WITH {EXPOSED}
SELECT x.arm, ev.user_id, ev.language, ev.latency_ms
FROM x JOIN completion_served ev ON ev.user_id = x.user_id AND ev.client_ts >= x.ts"""),
        {"experiment": EXPERIMENT, "hi": dt.datetime.max.replace(tzinfo=dt.UTC)},
    ).all()
    return list(rows)


def _bucket(latency: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """contributions._latency_bucket, in numpy."""
    buckets: npt.NDArray[np.int64] = np.floor(
        np.log(np.maximum(latency, 1.0)) / np.log(BUCKET_BASE)
    ).astype(np.int64)
    return np.maximum(buckets, 0)


def test_values_agree_with_numpy(synthetic: Connection) -> None:
    """Histograms and moments exactly, quantiles within the histogram's precision (a bucket,
    4 %) of numpy's on the same events."""
    rows = _events(synthetic)
    found = load(synthetic, "rollups")
    groups = {(arm, None) for arm, *_ in rows} | {(arm, language) for arm, _, language, _ in rows}
    assert {(arm, language) for arm, language, _ in found} == groups
    for arm, language in groups:
        mine = [r for r in rows if r.arm == arm and language in (None, r.language)]
        users = sorted({r.user_id for r in mine})
        latency = np.array([r.latency_ms for r in mine])
        buckets = _bucket(latency)
        values, counts = np.unique(buckets, return_counts=True)
        histogram = {int(b): int(c) for b, c in zip(values, counts, strict=True)}
        owner = np.searchsorted(users, [r.user_id for r in mine])
        n = np.bincount(owner, minlength=len(users)).astype(np.float64)
        for p in PS:
            stats = found[(arm, language, p)]
            assert stats.histogram == histogram
            bucket, share = quantile_bucket(histogram, p)
            weight = (buckets < bucket) + np.where(buckets == bucket, share, 0.0)
            s = np.bincount(owner, weights=weight, minlength=len(users))
            expected = RatioMoments(
                len(users), s.sum(), (s * s).sum(), n.sum(), (n * n).sum(), (s * n).sum()
            )
            assert dataclasses.astuple(stats.at_quantile) == pytest.approx(
                dataclasses.astuple(expected), rel=1e-9
            )
            assert stats.residual_fourth == pytest.approx(((s - p * n) ** 4).sum(), rel=1e-9)
            estimate = stats.estimate()
            assert estimate.code is ResultCode.OK
            nearest_rank = np.quantile(latency, p, method="inverted_cdf")
            assert estimate.value == pytest.approx(nearest_rank, rel=BUCKET_BASE - 1)
            assert estimate.ci is not None and estimate.value is not None
            assert estimate.ci[0] < estimate.value < estimate.ci[1]


def test_arms_without_events_are_reported_empty(synthetic: Connection) -> None:
    found = load(synthetic, "raw", by_language=False, arms=("control", "treatment", "idle"))
    assert [key for key in found if key[2] == 0.95] == [
        ("control", None, 0.95),
        ("treatment", None, 0.95),
        ("idle", None, 0.95),
    ]
    idle = found[("idle", None, 0.95)]
    assert idle.histogram == {} and idle.at_quantile.n == 0
    assert idle.estimate().code is ResultCode.NO_USERS
    result = compare_quantiles(idle.estimate(), found[("control", None, 0.95)].estimate())
    assert result.code is ResultCode.NO_USERS


def test_no_exposures_reports_the_arms_empty(conn: Connection) -> None:
    with analysis_settings(conn):
        empty = load_latency_quantiles(
            conn, params(conn), source="raw", by_language=True, arms=("control",)
        )
    assert [(q.metric, q.arm, q.language, dict(q.histogram)) for q in empty] == [
        ("latency_p50", "control", None, {}),
        ("latency_p95", "control", None, {}),
        ("latency_p99", "control", None, {}),
    ]


# The treatment's tail regression: log-latency spread 0.5 → 0.7 around a median lowered so the
# lognormal mean exp(μ + σ²/2) stays: p95 × exp(−0.12 + 1.645 · 0.2) = +23 %, p50 −11 %.
BASE_MEDIAN_MS = 180.0
SPREAD = (0.5, 0.7)


def _widen_treatment_tail(conn: Connection) -> None:
    """Rewrite the treatment's post-exposure latencies: same mean, heavier tail."""
    before, after = SPREAD
    median = math.log(BASE_MEDIAN_MS)
    conn.execute(
        text(f"""WITH {EXPOSED}
UPDATE completion_served ev
SET latency_ms = exp(:median + (before * before - after * after) / 2
                     + (ln(ev.latency_ms) - :median) * after / before)
FROM x, (SELECT CAST(:before AS float8) AS before, CAST(:after AS float8) AS after) k
WHERE ev.user_id = x.user_id AND x.arm = 'treatment' AND ev.client_ts >= x.ts"""),
        {
            "experiment": EXPERIMENT,
            "hi": dt.datetime.max.replace(tzinfo=dt.UTC),
            "median": median,
            "before": before,
            "after": after,
        },
    )


def _latency_mean_moments(conn: Connection, arm: str) -> RatioMoments:
    """latency_mean's sufficient statistics (Σ latency / Σ served per user) from raw events."""
    row = conn.execute(
        text(f"""WITH {EXPOSED},
u AS (
    SELECT ev.user_id, sum(ev.latency_ms) AS m, count(*)::float8 AS d
    FROM x JOIN completion_served ev ON ev.user_id = x.user_id AND ev.client_ts >= x.ts
    WHERE x.arm = :arm GROUP BY ev.user_id
)
SELECT count(*), sum(m), sum(m * m), sum(d), sum(d * d), sum(m * d) FROM u"""),
        {"experiment": EXPERIMENT, "hi": dt.datetime.max.replace(tzinfo=dt.UTC), "arm": arm},
    ).one()
    return RatioMoments(int(row[0]), *(float(v) for v in row[1:]))


def test_tail_regression_with_unchanged_mean_is_detected(conn: Connection) -> None:
    _load_synthetic(conn, users=400, events=24_000)
    _widen_treatment_tail(conn)
    refresh_rollups(conn)
    mean = compare(
        _latency_mean_moments(conn, "control"),
        _latency_mean_moments(conn, "treatment"),
        higher_is_better=False,
    )
    # The mean guardrail sees nothing...
    assert mean.lift_rel is not None and abs(mean.lift_rel) < 0.04
    assert mean.p_rel is not None and mean.p_rel > 0.05
    found = load(conn, "rollups", by_language=False)
    control = found[("control", None, 0.95)].estimate()
    treatment = found[("treatment", None, 0.95)].estimate()
    p95 = compare_quantiles(control, treatment)
    # ...the p95 one sees the tail 23 % longer.
    assert p95.code is ResultCode.OK
    assert p95.lift_rel == pytest.approx(0.23, abs=0.08)
    assert p95.p_rel is not None and p95.p_rel < 0.001
    assert p95.ci_rel is not None and p95.ci_rel[0] > 0.05
    guardrail = quantile_non_inferiority(control, treatment, margin=0.05)
    assert not guardrail.non_inferior and guardrail.p_value is not None
    assert guardrail.p_value > 0.5
    median = compare_quantiles(
        found[("control", None, 0.5)].estimate(), found[("treatment", None, 0.5)].estimate()
    )
    assert median.lift_rel == pytest.approx(-0.11, abs=0.05)
    assert median.chance_to_win is not None and median.chance_to_win > 0.95
