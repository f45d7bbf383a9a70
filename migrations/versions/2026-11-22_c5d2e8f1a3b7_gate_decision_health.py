"""Gate decisions keep the experiment health checks they were made with.

Revision ID: c5d2e8f1a3b7
Revises: b7c4e1a9d2f5
Create Date: 2026-11-22 09:00:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "c5d2e8f1a3b7"
down_revision: str | Sequence[str] | None = "b7c4e1a9d2f5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Decisions stored before the checks existed get an empty list, not NULL: "no checks".
    op.add_column(
        "gate_decisions",
        sa.Column(
            "health",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_column("gate_decisions", "health")
