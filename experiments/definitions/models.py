"""Registry tables: experiments, their arms, the audit log and the registry's change counter."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, SmallInteger, Text, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db.base import Base


class Experiment(Base):
    """One experiment. Targeting, metrics and the rollout plan are kept as validated JSON."""

    __tablename__ = "experiments"
    __table_args__ = (
        CheckConstraint(
            "status IN ('draft', 'running', 'paused', 'stopped', 'shipped')", name="status_known"
        ),
        CheckConstraint("coverage >= 0 AND coverage <= 1", name="coverage_in_unit_range"),
        CheckConstraint(
            "traffic_low >= 0 AND traffic_low < traffic_high AND traffic_high <= 1",
            name="traffic_range",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(Text, unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(Text)
    seed: Mapped[str] = mapped_column(Text)
    bucketing_version: Mapped[int] = mapped_column(SmallInteger)
    layer: Mapped[str] = mapped_column(Text)
    traffic_low: Mapped[float]
    traffic_high: Mapped[float]
    coverage: Mapped[float]
    targeting: Mapped[dict[str, Any]] = mapped_column(JSONB)
    primary_metrics: Mapped[list[str]] = mapped_column(JSONB)
    guardrails: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    rollout: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # The definition's ``capping`` and ``plan`` sections, as written (validated on read).
    analysis: Mapped[dict[str, Any]] = mapped_column(
        JSONB, default=dict, server_default=text("'{}'::jsonb")
    )
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    started_at: Mapped[dt.datetime | None]
    ended_at: Mapped[dt.datetime | None]

    arms: Mapped[list[ExperimentArm]] = relationship(
        back_populates="experiment",
        order_by="ExperimentArm.position",
        cascade="all, delete-orphan",
        lazy="selectin",
    )


class ExperimentArm(Base):
    """One arm: its share of the experiment's traffic and the variant changes it serves."""

    __tablename__ = "experiment_arms"
    __table_args__ = (
        UniqueConstraint("experiment_id", "name"),
        CheckConstraint("weight > 0 AND weight <= 1", name="weight_in_unit_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(SmallInteger)
    name: Mapped[str] = mapped_column(Text)
    weight: Mapped[float]
    description: Mapped[str] = mapped_column(Text, default="")
    variant: Mapped[dict[str, Any]] = mapped_column(JSONB)

    experiment: Mapped[Experiment] = relationship(back_populates="arms")


class ExperimentAudit(Base):
    """Who changed what, when: the state before and after every change to an experiment.

    Keyed by the experiment's key rather than a foreign key, so the log outlives the row.
    """

    __tablename__ = "experiment_audit"

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_key: Mapped[str] = mapped_column(Text, index=True)
    action: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class RegistryVersion(Base):
    """One row counting registry changes; assignment services poll it to know when to reload."""

    __tablename__ = "registry_version"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int]
    changed_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
