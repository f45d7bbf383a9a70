"""Stored backtests: a run, every sample's result per arm, and the per-language summaries."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, Index, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Base


class BacktestRun(Base):
    """One ``codelift backtest`` invocation, linked to its experiment by key."""

    __tablename__ = "backtest_runs"
    __table_args__ = (Index(None, "experiment_key", "started_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # A key, not a foreign key: a backtest may evaluate a definition before it is registered.
    experiment_key: Mapped[str] = mapped_column(Text)
    # Arm name -> the variant overrides it was evaluated with.
    arms: Mapped[dict[str, Any]] = mapped_column(JSONB)
    baseline_arm: Mapped[str] = mapped_column(Text)
    corpus: Mapped[str] = mapped_column(Text)
    languages: Mapped[list[str]] = mapped_column(JSONB)
    samples_per_language: Mapped[int]
    seed: Mapped[int]
    # "in-process" or the URL of the gateway the completions came from.
    gateway: Mapped[str] = mapped_column(Text)
    # Everything else that decides the figures (resamples, alpha, context sizes, triggers).
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB)
    started_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[dt.datetime | None]


class BacktestSample(Base):
    """One masked span and what one arm put there."""

    __tablename__ = "backtest_samples"

    run_id: Mapped[int] = mapped_column(
        ForeignKey("backtest_runs.id", ondelete="CASCADE"), primary_key=True
    )
    arm: Mapped[str] = mapped_column(Text, primary_key=True)
    sample_index: Mapped[int] = mapped_column(primary_key=True)
    language: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)
    trigger: Mapped[str] = mapped_column(Text)
    # Character offsets of the masked span in the file.
    span_start: Mapped[int]
    span_end: Mapped[int]
    target: Mapped[str] = mapped_column(Text)
    completion: Mapped[str] = mapped_column(Text)
    exact: Mapped[bool]
    exact_stripped: Mapped[bool]
    chrf: Mapped[float]
    edit_similarity: Mapped[float]
    latency_ms: Mapped[float | None]
    suggestion_id: Mapped[str | None] = mapped_column(Text)
    # A failed request scores 0 on every text metric and has no latency.
    error: Mapped[str | None] = mapped_column(Text)


class BacktestSummary(Base):
    """One metric of one arm in one language ("all" = every language), with its bootstrap CI
    and, for arms other than the baseline, the paired difference to the baseline."""

    __tablename__ = "backtest_summaries"

    run_id: Mapped[int] = mapped_column(
        ForeignKey("backtest_runs.id", ondelete="CASCADE"), primary_key=True
    )
    arm: Mapped[str] = mapped_column(Text, primary_key=True)
    language: Mapped[str] = mapped_column(Text, primary_key=True)
    metric: Mapped[str] = mapped_column(Text, primary_key=True)
    n: Mapped[int]
    value: Mapped[float | None]
    ci_low: Mapped[float | None]
    ci_high: Mapped[float | None]
    diff: Mapped[float | None]
    diff_low: Mapped[float | None]
    diff_high: Mapped[float | None]
    p_value: Mapped[float | None]
