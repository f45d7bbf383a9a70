"""Rollup tables: per-user sums of every metric component, so analysis reads no old raw events.

``metric_rollup_daily`` is experiment-agnostic: one row per (UTC day, user, language) holding
the numerator and denominator components of every metric (see ``experiments.analysis.metrics_sql``).
``exposure_day_rollup`` holds the same sums for the one day a day grain cannot split, a user's
exposure day: per (experiment, user, language), before (``post`` false) and from the exposure
instant on (``post`` true). Together they give exactly what the raw events give.
``rollup_state`` is the refresh watermark (one row).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import CheckConstraint, Integer, SmallInteger, Text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Base


class RollupComponents:
    """The per-user sums behind every metric; integers, so sums of rows are exact."""

    shown_n: Mapped[int]
    shown_chars: Mapped[int]
    accepted_n: Mapped[int]
    accepted_chars: Mapped[int]
    typed_chars: Mapped[int]
    ai_chars: Mapped[int]
    reached_30: Mapped[int]
    persisted_30: Mapped[int]
    reached_chars_30: Mapped[int]
    persisted_chars_30: Mapped[int]
    reached_120: Mapped[int]
    persisted_120: Mapped[int]
    reached_chars_120: Mapped[int]
    persisted_chars_120: Mapped[int]
    reached_300: Mapped[int]
    persisted_300: Mapped[int]
    reached_chars_300: Mapped[int]
    persisted_chars_300: Mapped[int]
    reached_600: Mapped[int]
    persisted_600: Mapped[int]
    reached_chars_600: Mapped[int]
    persisted_chars_600: Mapped[int]
    served_n: Mapped[int]
    error_n: Mapped[int]
    latency_sum: Mapped[float]
    # Gateway latency histogram, sparse: bucket k >= 1 holds [1.04^k, 1.04^(k+1)) ms, bucket 0
    # holds [0, 1.04) ms; latency_counts[i] served completions fell in latency_buckets[i].
    latency_buckets: Mapped[list[int]] = mapped_column(ARRAY(SmallInteger))
    latency_counts: Mapped[list[int]] = mapped_column(ARRAY(Integer))
    # The newest event summed into the row (the data's time range).
    last_ts: Mapped[dt.datetime]


class MetricRollupDaily(RollupComponents, Base):
    """Metric components of one user's events of one UTC day in one language."""

    __tablename__ = "metric_rollup_daily"

    # Day first: a refresh deletes and rewrites whole days; analysis hash-joins on user_id.
    day: Mapped[dt.date] = mapped_column(primary_key=True, sort_order=-1)
    user_id: Mapped[str] = mapped_column(Text, primary_key=True, sort_order=-1)
    language: Mapped[str] = mapped_column(Text, primary_key=True, sort_order=-1)


class ExposureDayRollup(RollupComponents, Base):
    """Metric components of one user's exposure day, split at the exposure instant."""

    __tablename__ = "exposure_day_rollup"

    experiment: Mapped[str] = mapped_column(Text, primary_key=True, sort_order=-1)
    user_id: Mapped[str] = mapped_column(Text, primary_key=True, sort_order=-1)
    language: Mapped[str] = mapped_column(Text, primary_key=True, sort_order=-1)
    post: Mapped[bool] = mapped_column(primary_key=True, sort_order=-1)


class RollupState(Base):
    """The rollup refresh's watermark: days from ``watermark`` (less a lookback) are redone."""

    __tablename__ = "rollup_state"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    watermark: Mapped[dt.datetime]
    refreshed_at: Mapped[dt.datetime]
