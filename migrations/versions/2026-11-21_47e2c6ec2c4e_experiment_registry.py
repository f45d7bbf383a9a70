"""Experiment registry: experiments, arms, audit log and the registry version counter.

Revision ID: 47e2c6ec2c4e
Revises: af54acd21642
Create Date: 2026-11-21 08:14:39.110697+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "47e2c6ec2c4e"
down_revision: str | Sequence[str] | None = "af54acd21642"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "experiment_audit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_key", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("before", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("after", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiment_audit")),
    )
    op.create_index(
        op.f("ix_experiment_audit_experiment_key"),
        "experiment_audit",
        ["experiment_key"],
        unique=False,
    )
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("seed", sa.Text(), nullable=False),
        sa.Column("bucketing_version", sa.SmallInteger(), nullable=False),
        sa.Column("layer", sa.Text(), nullable=False),
        sa.Column("traffic_low", sa.Double(), nullable=False),
        sa.Column("traffic_high", sa.Double(), nullable=False),
        sa.Column("coverage", sa.Double(), nullable=False),
        sa.Column("targeting", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("primary_metrics", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("guardrails", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("rollout", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('draft', 'running', 'paused', 'stopped', 'shipped')",
            name=op.f("ck_experiments_status_known"),
        ),
        sa.CheckConstraint(
            "coverage >= 0 AND coverage <= 1", name=op.f("ck_experiments_coverage_in_unit_range")
        ),
        sa.CheckConstraint(
            "traffic_low >= 0 AND traffic_low < traffic_high AND traffic_high <= 1",
            name=op.f("ck_experiments_traffic_range"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiments")),
        sa.UniqueConstraint("key", name=op.f("uq_experiments_key")),
    )
    op.create_table(
        "registry_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "changed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("id = 1", name=op.f("ck_registry_version_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registry_version")),
    )
    # The counter's one row; every registry change increments it.
    op.execute("INSERT INTO registry_version (id, version) VALUES (1, 0)")
    op.create_table(
        "experiment_arms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("weight", sa.Double(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("variant", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.CheckConstraint(
            "weight > 0 AND weight <= 1", name=op.f("ck_experiment_arms_weight_in_unit_range")
        ),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_experiment_arms_experiment_id_experiments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiment_arms")),
        sa.UniqueConstraint("experiment_id", "name", name=op.f("uq_experiment_arms_experiment_id")),
    )


def downgrade() -> None:
    op.drop_table("experiment_arms")
    op.drop_table("registry_version")
    op.drop_table("experiments")
    op.drop_index(op.f("ix_experiment_audit_experiment_key"), table_name="experiment_audit")
    op.drop_table("experiment_audit")
