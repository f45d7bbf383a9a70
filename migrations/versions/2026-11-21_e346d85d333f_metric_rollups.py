"""Metric rollups: per user-day and exposure-day sums of metric components, refresh watermark.

Revision ID: e346d85d333f
Revises: 47e2c6ec2c4e
Create Date: 2026-11-21 08:28:32.732766+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "e346d85d333f"
down_revision: str | Sequence[str] | None = "47e2c6ec2c4e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "exposure_day_rollup",
        sa.Column("experiment", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("language", sa.Text(), nullable=False),
        sa.Column("post", sa.Boolean(), nullable=False),
        sa.Column("shown_n", sa.Integer(), nullable=False),
        sa.Column("shown_chars", sa.Integer(), nullable=False),
        sa.Column("accepted_n", sa.Integer(), nullable=False),
        sa.Column("accepted_chars", sa.Integer(), nullable=False),
        sa.Column("typed_chars", sa.Integer(), nullable=False),
        sa.Column("ai_chars", sa.Integer(), nullable=False),
        sa.Column("reached_30", sa.Integer(), nullable=False),
        sa.Column("persisted_30", sa.Integer(), nullable=False),
        sa.Column("reached_chars_30", sa.Integer(), nullable=False),
        sa.Column("persisted_chars_30", sa.Integer(), nullable=False),
        sa.Column("reached_120", sa.Integer(), nullable=False),
        sa.Column("persisted_120", sa.Integer(), nullable=False),
        sa.Column("reached_chars_120", sa.Integer(), nullable=False),
        sa.Column("persisted_chars_120", sa.Integer(), nullable=False),
        sa.Column("reached_300", sa.Integer(), nullable=False),
        sa.Column("persisted_300", sa.Integer(), nullable=False),
        sa.Column("reached_chars_300", sa.Integer(), nullable=False),
        sa.Column("persisted_chars_300", sa.Integer(), nullable=False),
        sa.Column("reached_600", sa.Integer(), nullable=False),
        sa.Column("persisted_600", sa.Integer(), nullable=False),
        sa.Column("reached_chars_600", sa.Integer(), nullable=False),
        sa.Column("persisted_chars_600", sa.Integer(), nullable=False),
        sa.Column("served_n", sa.Integer(), nullable=False),
        sa.Column("error_n", sa.Integer(), nullable=False),
        sa.Column("latency_sum", sa.Double(), nullable=False),
        sa.Column("latency_buckets", postgresql.ARRAY(sa.SmallInteger()), nullable=False),
        sa.Column("latency_counts", postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.Column("last_ts", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "experiment", "user_id", "language", "post", name=op.f("pk_exposure_day_rollup")
        ),
    )
    op.create_table(
        "metric_rollup_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("language", sa.Text(), nullable=False),
        sa.Column("shown_n", sa.Integer(), nullable=False),
        sa.Column("shown_chars", sa.Integer(), nullable=False),
        sa.Column("accepted_n", sa.Integer(), nullable=False),
        sa.Column("accepted_chars", sa.Integer(), nullable=False),
        sa.Column("typed_chars", sa.Integer(), nullable=False),
        sa.Column("ai_chars", sa.Integer(), nullable=False),
        sa.Column("reached_30", sa.Integer(), nullable=False),
        sa.Column("persisted_30", sa.Integer(), nullable=False),
        sa.Column("reached_chars_30", sa.Integer(), nullable=False),
        sa.Column("persisted_chars_30", sa.Integer(), nullable=False),
        sa.Column("reached_120", sa.Integer(), nullable=False),
        sa.Column("persisted_120", sa.Integer(), nullable=False),
        sa.Column("reached_chars_120", sa.Integer(), nullable=False),
        sa.Column("persisted_chars_120", sa.Integer(), nullable=False),
        sa.Column("reached_300", sa.Integer(), nullable=False),
        sa.Column("persisted_300", sa.Integer(), nullable=False),
        sa.Column("reached_chars_300", sa.Integer(), nullable=False),
        sa.Column("persisted_chars_300", sa.Integer(), nullable=False),
        sa.Column("reached_600", sa.Integer(), nullable=False),
        sa.Column("persisted_600", sa.Integer(), nullable=False),
        sa.Column("reached_chars_600", sa.Integer(), nullable=False),
        sa.Column("persisted_chars_600", sa.Integer(), nullable=False),
        sa.Column("served_n", sa.Integer(), nullable=False),
        sa.Column("error_n", sa.Integer(), nullable=False),
        sa.Column("latency_sum", sa.Double(), nullable=False),
        sa.Column("latency_buckets", postgresql.ARRAY(sa.SmallInteger()), nullable=False),
        sa.Column("latency_counts", postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.Column("last_ts", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("day", "user_id", "language", name=op.f("pk_metric_rollup_daily")),
    )
    op.create_table(
        "rollup_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("watermark", sa.DateTime(timezone=True), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_rollup_state_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollup_state")),
    )


def downgrade() -> None:
    op.drop_table("rollup_state")
    op.drop_table("metric_rollup_daily")
    op.drop_table("exposure_day_rollup")
