"""Backtests (runs, per-sample results, summaries) and the ``evaluate`` key scope.

Revision ID: b7c4e1a9d2f5
Revises: f3ed6ac0b8a1
Create Date: 2026-11-21 10:30:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "b7c4e1a9d2f5"
down_revision: str | Sequence[str] | None = "f3ed6ac0b8a1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SCOPES_BEFORE = "scopes <@ ARRAY['ingest', 'serve', 'admin']::varchar[]"
_SCOPES_AFTER = "scopes <@ ARRAY['ingest', 'serve', 'admin', 'evaluate']::varchar[]"


def _replace_scopes_check(condition: str) -> None:
    op.drop_constraint(op.f("ck_api_keys_known_scopes"), "api_keys", type_="check")
    op.create_check_constraint(op.f("ck_api_keys_known_scopes"), "api_keys", condition)


def upgrade() -> None:
    _replace_scopes_check(_SCOPES_AFTER)
    op.create_table(
        "backtest_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_key", sa.Text(), nullable=False),
        sa.Column("arms", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("baseline_arm", sa.Text(), nullable=False),
        sa.Column("corpus", sa.Text(), nullable=False),
        sa.Column("languages", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("samples_per_language", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("gateway", sa.Text(), nullable=False),
        sa.Column("parameters", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backtest_runs")),
    )
    op.create_index(
        op.f("ix_backtest_runs_experiment_key"),
        "backtest_runs",
        ["experiment_key", "started_at"],
        unique=False,
    )
    op.create_table(
        "backtest_samples",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("arm", sa.Text(), nullable=False),
        sa.Column("sample_index", sa.Integer(), nullable=False),
        sa.Column("language", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("trigger", sa.Text(), nullable=False),
        sa.Column("span_start", sa.Integer(), nullable=False),
        sa.Column("span_end", sa.Integer(), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("completion", sa.Text(), nullable=False),
        sa.Column("exact", sa.Boolean(), nullable=False),
        sa.Column("exact_stripped", sa.Boolean(), nullable=False),
        sa.Column("chrf", sa.Double(), nullable=False),
        sa.Column("edit_similarity", sa.Double(), nullable=False),
        sa.Column("latency_ms", sa.Double(), nullable=True),
        sa.Column("suggestion_id", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["backtest_runs.id"],
            name=op.f("fk_backtest_samples_run_id_backtest_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "arm", "sample_index", name=op.f("pk_backtest_samples")),
    )
    op.create_table(
        "backtest_summaries",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("arm", sa.Text(), nullable=False),
        sa.Column("language", sa.Text(), nullable=False),
        sa.Column("metric", sa.Text(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("ci_low", sa.Double(), nullable=True),
        sa.Column("ci_high", sa.Double(), nullable=True),
        sa.Column("diff", sa.Double(), nullable=True),
        sa.Column("diff_low", sa.Double(), nullable=True),
        sa.Column("diff_high", sa.Double(), nullable=True),
        sa.Column("p_value", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["backtest_runs.id"],
            name=op.f("fk_backtest_summaries_run_id_backtest_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "run_id", "arm", "language", "metric", name=op.f("pk_backtest_summaries")
        ),
    )


def downgrade() -> None:
    op.drop_table("backtest_summaries")
    op.drop_table("backtest_samples")
    op.drop_index(op.f("ix_backtest_runs_experiment_key"), table_name="backtest_runs")
    op.drop_table("backtest_runs")
    # Keys holding the new scope would violate the old check: drop the scope from them first.
    op.execute("UPDATE api_keys SET scopes = array_remove(scopes, 'evaluate')")
    _replace_scopes_check(_SCOPES_BEFORE)
