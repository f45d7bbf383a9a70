"""Exactly once per event id: the ids of the acceptance window, keyed on the id alone.

Revision ID: e7b93f2a6c10
Revises: d8a41f0c6e29
Create Date: 2026-12-02 06:30:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e7b93f2a6c10"
down_revision: str | Sequence[str] | None = "d8a41f0c6e29"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_EVENT_TABLES = (
    "completion_served",
    "suggestion_shown",
    "suggestion_outcome",
    "persistence_check",
    "typing_volume",
    "feedback",
    "exposure",
)
# The longest acceptance window the settings allow (max_event_age_days ≤ 60) and a day of
# clock skew: ids stored before the upgrade keep de-duplicating their retries. Pruning then
# trims the table to the configured window.
_BACKFILL_DAYS = 61


def upgrade() -> None:
    op.create_table(
        "event_ids",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("client_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_event_ids")),
    )
    op.create_index(
        op.f("ix_event_ids_received_at"),
        "event_ids",
        ["received_at"],
        unique=False,
        postgresql_using="brin",
    )
    for table in _EVENT_TABLES:
        # An id stored twice before (in two tables, or re-stamped) keeps its earliest row.
        op.execute(
            f"INSERT INTO event_ids (event_id, event_type, client_ts, received_at) "
            f"SELECT DISTINCT ON (event_id) event_id, '{table}', client_ts, received_at "
            f"FROM {table} WHERE received_at >= now() - interval '{_BACKFILL_DAYS} days' "
            f"ORDER BY event_id, received_at, client_ts ON CONFLICT DO NOTHING"
        )


def downgrade() -> None:
    op.drop_index(op.f("ix_event_ids_received_at"), table_name="event_ids")
    op.drop_table("event_ids")
