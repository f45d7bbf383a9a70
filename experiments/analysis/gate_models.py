"""Stored gate decisions: what each evaluation decided, why, and whether it was applied."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import CheckConstraint, Index, SmallInteger, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Base


class GateDecisionRow(Base):
    """One gate evaluation of one experiment."""

    __tablename__ = "gate_decisions"
    __table_args__ = (
        CheckConstraint(
            "decision IN ('advance', 'hold', 'rollback', 'halt')", name="decision_known"
        ),
        Index(None, "experiment_key", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_key: Mapped[str] = mapped_column(Text)
    decision: Mapped[str] = mapped_column(Text)
    reasons: Mapped[list[str]] = mapped_column(JSONB)
    coverage: Mapped[float]
    next_coverage: Mapped[float | None]
    stage: Mapped[int | None] = mapped_column(SmallInteger)
    # The analysis figures the decision was made on (users per arm, SRM p, verdicts).
    evidence: Mapped[dict[str, object]] = mapped_column(JSONB)
    # The experiment's health checks (``experiments.analysis.health.HealthCheck.to_dict``); rows
    # stored before the checks existed have none.
    health: Mapped[list[dict[str, object]]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb")
    )
    applied: Mapped[bool]
    actor: Mapped[str] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
