"""Metric SQL on a tiny hand-made dataset: every sufficient statistic computed by hand.

The dataset (day D = three days ago, midnight UTC; experiment ``hand``):

- u1, control, exposed D 10:00. Before exposure (excluded): s0 shown 1000 ms and accepted, a
  completion served in 1000 ms, a typing window. After: s1 shown 1000 ms (50 chars), accepted
  40 chars; s2 shown 500 ms, dismissed (not shown); s3 shown 500 ms (20 chars) on D+1 but
  accepted (so shown, by the accepted rule); s4 in go on D+1 shown 800 ms (10 chars),
  partially accepted 5 chars. Checks: s1 at 30 s present 0.1 (persisted), s1 at 120 s present
  0.5 (not), s3 at 30 s removed, s2 at 30 s (not accepted: ignored). Served 100, 200 (error),
  300 ms. Typing 100 manual, 50 AI. Pre-period: D-1 a shown 900 ms, dismissed; D-2 another
  (outside a 1-day pre-period).
- u2, treatment, exposed D 08:00: s5 shown 2000 ms (100 chars) ignored; s6 shown exactly
  750 ms (60 chars) accepted 60 chars; served 150, 250 ms; typing 300 manual, 0 AI.
- u3, treatment, exposed D+2 12:00: a suggestion accepted before exposure; after it only a
  completion served in 500 ms.
- u4, never exposed: events after D are ignored.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import Connection, insert

from collector.models import (
    CompletionServedRow,
    ExposureRow,
    PersistenceCheckRow,
    SuggestionOutcomeRow,
    SuggestionShownRow,
    TypingVolumeRow,
)
from experiments.analysis.contributions import histogram_percentile
from experiments.analysis.metrics_sql import ExperimentData, load_experiment_data
from experiments.analysis.moments_sql import metric_names
from experiments.analysis.rollups import refresh_rollups
from experiments.analysis.stats.moments import CupedRatioMoments, MeanMoments, RatioMoments
from experiments.analysis.stats.quantiles import histogram_quantile
from experiments.assignment.exposures import exposure_id
from experiments.definitions.metrics_catalog import METRICS
from tests.database import utc_today

EXPERIMENT = "hand"
D = dt.datetime.combine(utc_today() - dt.timedelta(days=3), dt.time(), dt.UTC)


def at(day: int, hour: float) -> dt.datetime:
    """D + ``day`` days + ``hour`` hours."""
    return D + dt.timedelta(days=day, hours=hour)


def _common(user: str, ts: dt.datetime, language: str) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4(),
        "client_ts": ts,
        "received_at": ts,
        "schema_version": 1,
        "user_id": user,
        "session_id": "session",
        "ide": "vscode",
        "plugin_version": "1.0",
        "language": language,
    }


class Events:
    """Builders that insert one event each, in the test's transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def _add(self, table: Any, row: dict[str, Any]) -> None:
        self.conn.execute(insert(table), [row])

    def exposure(self, user: str, arm: str, ts: dt.datetime, lang: str = "python") -> None:
        row = _common(user, ts, lang) | {"experiment": EXPERIMENT, "arm": arm}
        self._add(ExposureRow, row | {"event_id": exposure_id(EXPERIMENT, user)})

    def shown(
        self, user: str, sid: str, ts: dt.datetime, display: float, chars: int, lang: str = "python"
    ) -> None:
        self._add(
            SuggestionShownRow,
            _common(user, ts, lang)
            | {
                "suggestion_id": sid,
                "display_ms": display,
                "chars": chars,
                "lines": 1,
                "multiline": False,
                "trigger": "auto",
            },
        )

    def outcome(
        self, user: str, sid: str, ts: dt.datetime, outcome: str, chars: int, lang: str = "python"
    ) -> None:
        self._add(
            SuggestionOutcomeRow,
            _common(user, ts, lang)
            | {
                "suggestion_id": sid,
                "outcome": outcome,
                "accepted_chars": chars,
                "accepted_lines": 1 if chars else 0,
            },
        )

    def check(
        self, user: str, sid: str, ts: dt.datetime, checkpoint: int, status: str, ratio: float
    ) -> None:
        self._add(
            PersistenceCheckRow,
            _common(user, ts, "python")
            | {
                "suggestion_id": sid,
                "checkpoint_s": checkpoint,
                "status": status,
                "edit_distance_ratio": ratio,
                "chars_remaining": 0,
            },
        )

    def served(self, user: str, ts: dt.datetime, latency: float, error: str | None = None) -> None:
        self._add(
            CompletionServedRow,
            _common(user, ts, "python")
            | {
                "suggestion_id": f"srv-{uuid.uuid4().hex[:8]}",
                "request_id": "req",
                "arms": {},
                "model": "m",
                "latency_ms": latency,
                "prompt_tokens": 10,
                "completion_chars": 10,
                "completion_lines": 1,
                "finish_reason": "stop",
                "error": error,
            },
        )

    def typing(self, user: str, ts: dt.datetime, manual: int, ai: int) -> None:
        self._add(
            TypingVolumeRow,
            _common(user, ts, "python")
            | {
                "window_start": ts - dt.timedelta(minutes=5),
                "window_end": ts,
                "chars_typed_manual": manual,
                "chars_accepted_ai": ai,
                "chars_deleted": 0,
                "chars_excluded_paste": 0,
                "chars_excluded_bulk": 0,
                "chars_excluded_undo_redo": 0,
            },
        )


@pytest.fixture
def hand(conn: Connection) -> Connection:
    """The dataset of the module docstring."""
    e = Events(conn)
    sec = 1 / 3600
    # u1, control
    e.exposure("u1", "control", at(0, 10))
    e.shown("u1", "s0", at(0, 9), 1000, 30)
    e.outcome("u1", "s0", at(0, 9 + 5 * sec), "accepted", 30)
    e.served("u1", at(0, 9), 1000)
    e.typing("u1", at(0, 9.5), 999, 999)
    e.shown("u1", "p1", at(-1, 12), 900, 10)
    e.outcome("u1", "p1", at(-1, 12 + sec), "dismissed", 0)
    e.shown("u1", "p2", at(-2, 12), 900, 10)
    e.shown("u1", "s1", at(0, 11), 1000, 50)
    e.outcome("u1", "s1", at(0, 11 + 2 * sec), "accepted", 40)
    e.check("u1", "s1", at(0, 11 + 32 * sec), 30, "present", 0.1)
    e.check("u1", "s1", at(0, 11 + 122 * sec), 120, "present", 0.5)
    e.shown("u1", "s2", at(0, 12), 500, 30)
    e.outcome("u1", "s2", at(0, 12 + sec), "dismissed", 0)
    e.check("u1", "s2", at(0, 12 + 31 * sec), 30, "present", 0.0)
    e.shown("u1", "s3", at(1, 3), 500, 20)
    e.outcome("u1", "s3", at(1, 3 + sec), "accepted", 20)
    e.check("u1", "s3", at(1, 3 + 31 * sec), 30, "removed", 1.0)
    e.shown("u1", "s4", at(1, 10), 800, 10, lang="go")
    e.outcome("u1", "s4", at(1, 10 + sec), "partially_accepted", 5, lang="go")
    e.served("u1", at(0, 11), 100)
    e.served("u1", at(0, 12), 200, error="backend timeout")
    e.served("u1", at(1, 3), 300)
    e.typing("u1", at(0, 14), 100, 50)
    # u2, treatment
    e.exposure("u2", "treatment", at(0, 8))
    e.shown("u2", "s5", at(0, 9), 2000, 100)
    e.outcome("u2", "s5", at(0, 9 + sec), "ignored", 0)
    e.shown("u2", "s6", at(0, 9.5), 750, 60)
    e.outcome("u2", "s6", at(0, 9.5 + sec), "accepted", 60)
    e.served("u2", at(0, 9), 150)
    e.served("u2", at(0, 9.5), 250)
    e.typing("u2", at(0, 10), 300, 0)
    # u3, treatment: only a served completion after exposure
    e.exposure("u3", "treatment", at(2, 12))
    e.shown("u3", "s7", at(0, 9), 1000, 10)
    e.outcome("u3", "s7", at(0, 9 + sec), "accepted", 10)
    e.served("u3", at(2, 13), 500)
    # u4, never exposed
    e.shown("u4", "s8", at(1, 9), 1000, 10)
    e.outcome("u4", "s8", at(1, 9 + sec), "accepted", 10)
    e.served("u4", at(1, 9), 50)
    return conn


def ratio(n: int, m: float, m2: float, d: float, d2: float, md: float) -> RatioMoments:
    return RatioMoments(n, m, m2, d, d2, md)


EXPECTED: dict[tuple[str, str, str | None], Any] = {
    # Per-user sums squared per user: u1's 3 accepted of 3 shown span two days and languages.
    # A ratio metric's all-languages n is every analysed user of the arm (u3 adds zeros), as
    # gbstats counts every user of a variation; a language's n, the users with events in it.
    ("acceptance_rate", "control", None): ratio(1, 3, 9, 3, 9, 9),
    ("acceptance_rate", "control", "python"): ratio(1, 2, 4, 2, 4, 4),
    ("acceptance_rate", "control", "go"): ratio(1, 1, 1, 1, 1, 1),
    ("acceptance_rate", "treatment", None): ratio(2, 1, 1, 2, 4, 2),
    ("acceptance_rate_chars", "control", None): ratio(1, 65, 65**2, 80, 80**2, 65 * 80),
    ("acceptance_rate_chars", "control", "python"): ratio(1, 60, 3600, 70, 4900, 4200),
    ("acceptance_rate_chars", "treatment", None): ratio(2, 60, 3600, 160, 160**2, 9600),
    ("pct_code_written", "control", None): ratio(1, 50, 2500, 150, 22500, 7500),
    ("pct_code_written", "treatment", None): ratio(2, 0, 0, 300, 90000, 0),
    ("cpr_30", "control", None): ratio(1, 1, 1, 2, 4, 2),
    ("cpr_30_chars", "control", None): ratio(1, 40, 1600, 60, 3600, 2400),
    ("cpr_120", "control", None): ratio(1, 0, 0, 1, 1, 0),
    ("cpr_120_chars", "control", None): ratio(1, 0, 0, 40, 1600, 0),
    ("cpr_300", "control", None): ratio(1, 0, 0, 0, 0, 0),
    ("cpr_30", "treatment", None): ratio(2, 0, 0, 0, 0, 0),
    ("latency_mean_per_completion", "control", None): ratio(1, 600, 360000, 3, 9, 1800),
    ("latency_mean_per_completion", "treatment", None): ratio(2, 900, 400**2 + 500**2, 3, 5, 1300),
    ("error_rate", "control", None): ratio(1, 1, 1, 3, 9, 3),
    ("error_rate", "treatment", None): ratio(2, 0, 0, 3, 5, 0),
    ("display_rate", "control", None): ratio(1, 3, 9, 3, 9, 9),
    ("display_rate", "treatment", None): ratio(2, 2, 4, 3, 5, 4),
    ("suggestions_per_user", "control", None): MeanMoments(1, 3, 9),
    ("suggestions_per_user", "treatment", None): MeanMoments(2, 2, 4),
    ("suggestions_per_user", "treatment", "go"): MeanMoments(0, 0, 0),
}


def load(conn: Connection, source: str, **options: Any) -> ExperimentData:
    if source == "rollups":
        refresh_rollups(conn)
    return load_experiment_data(
        conn,
        experiment=EXPERIMENT,
        source=source,  # type: ignore[arg-type]
        by_language=True,
        **options,
    )


@pytest.mark.parametrize("source", ["raw", "rollups"])
@pytest.mark.parametrize(("metric", "arm", "language"), list(EXPECTED))
def test_hand_computed_statistics(
    hand: Connection, source: str, metric: str, arm: str, language: str | None
) -> None:
    data = load(hand, source)
    got = data.get(metric, arm, language)
    want = EXPECTED[(metric, arm, language)]
    assert type(got) is type(want)
    # The third-order sums (RatioMoments' last three fields) are checked in test_capping_sql.
    fields = len(dataclasses.fields(want)) - (3 if isinstance(want, RatioMoments) else 0)
    assert dataclasses.astuple(got)[:fields] == pytest.approx(
        dataclasses.astuple(want)[:fields], abs=1e-9
    )


@pytest.mark.parametrize("source", ["raw", "rollups"])
def test_experiment_level_figures(hand: Connection, source: str) -> None:
    data = load(hand, source)
    assert data.users_per_arm == {"control": 1, "treatment": 2}
    assert data.first_exposure == at(0, 8)
    assert data.last_event == at(2, 13)
    assert data.source == source
    assert {m.language for m in data.metrics} == {None, "python", "go"}
    assert {m.metric for m in data.metrics} == set(metric_names())
    assert set(metric_names()) | {"latency_p50", "latency_p95", "latency_p99"} == set(METRICS)
    # Both sources read the same per-user histograms: u1's 1000 ms before exposure is left out.
    for arm, p95 in (("control", 300), ("treatment", 500)):
        stats = data.quantile("latency_p95", arm)
        value = histogram_quantile(stats.histogram, stats.p)
        assert value == pytest.approx(p95, rel=0.0199)


@pytest.mark.parametrize("source", ["raw", "rollups"])
def test_cuped_pre_period(hand: Connection, source: str) -> None:
    data = load(hand, source, cuped=True, pre_period_days=1)
    got = data.get("acceptance_rate", "control")
    # Pre-period of u1 (D-1 00:00 to exposure): s0 accepted of s0, p1 shown; p2 (D-2) is out.
    assert got == CupedRatioMoments(
        n=1,
        m_post_sum=3,
        m_post_sum_squares=9,
        d_post_sum=3,
        d_post_sum_squares=9,
        m_pre_sum=1,
        m_pre_sum_squares=1,
        d_pre_sum=2,
        d_pre_sum_squares=4,
        m_post_d_post_sum=9,
        m_pre_d_pre_sum=2,
        m_post_m_pre_sum=3,
        m_post_d_pre_sum=6,
        d_post_m_pre_sum=3,
        d_post_d_pre_sum=6,
        # One user, m = d = 3 after exposure: Σm²d = Σmd² = Σd³ = 27.
        m2d_sum=27,
        md2_sum=27,
        d3_sum=27,
    )
    # u3's pre-period (D+1 to D+2 12:00) has no suggestions; its s7 on D is two days back.
    spu = data.get("suggestions_per_user", "treatment")
    assert (spu.n, spu.post_sum, spu.pre_sum) == (2, 2, 0)  # type: ignore[union-attr]


def test_unknown_experiment_gives_empty_data(conn: Connection) -> None:
    data = load_experiment_data(conn, experiment="nobody")
    assert data.users_per_arm == {}
    assert data.metrics == []
    assert data.first_exposure is None


@pytest.mark.parametrize(
    ("counts", "value"),
    [({0: 5}, 0.52), ({10: 94, 20: 6}, 1.04**20.5), ({10: 95, 20: 5}, 1.04**10.5)],
)
def test_histogram_percentile(counts: dict[int, int], value: float) -> None:
    assert histogram_percentile(counts, 0.95) == pytest.approx(value, abs=1e-9)
