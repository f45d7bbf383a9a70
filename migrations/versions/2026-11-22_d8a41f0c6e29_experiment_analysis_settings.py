"""Experiments keep their analysis settings: per-metric capping and the power plan.

Revision ID: d8a41f0c6e29
Revises: c5d2e8f1a3b7
Create Date: 2026-11-22 10:00:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "d8a41f0c6e29"
down_revision: str | Sequence[str] | None = "c5d2e8f1a3b7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Experiments stored before get "{}": the catalog's caps and the default plan.
    op.add_column(
        "experiments",
        sa.Column(
            "analysis",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_column("experiments", "analysis")
