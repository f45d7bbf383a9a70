"""Gate decisions: every evaluation of an experiment's rollout gate, with its reasons.

Revision ID: 06b3c6cc94c0
Revises: e346d85d333f
Create Date: 2026-11-21 08:54:02.178096+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "06b3c6cc94c0"
down_revision: str | Sequence[str] | None = "e346d85d333f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gate_decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_key", sa.Text(), nullable=False),
        sa.Column("decision", sa.Text(), nullable=False),
        sa.Column("reasons", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("coverage", sa.Double(), nullable=False),
        sa.Column("next_coverage", sa.Double(), nullable=True),
        sa.Column("stage", sa.SmallInteger(), nullable=True),
        sa.Column("evidence", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint(
            "decision IN ('advance', 'hold', 'rollback', 'halt')",
            name=op.f("ck_gate_decisions_decision_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gate_decisions")),
    )
    op.create_index(
        op.f("ix_gate_decisions_experiment_key"),
        "gate_decisions",
        ["experiment_key", "at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_gate_decisions_experiment_key"), table_name="gate_decisions")
    op.drop_table("gate_decisions")
