"""Feedback polarity has three values: positive, negative and neutral.

Requests, questions, measurements and balanced verdicts are neither praise nor complaint; a
two-valued polarity forced them into one or the other and skewed the positive share.

Revision ID: a4c9e1d27b35
Revises: e7b93f2a6c10
Create Date: 2026-12-02 14:00:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "a4c9e1d27b35"
down_revision: str | Sequence[str] | None = "e7b93f2a6c10"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("feedback_tagging", "feedback_corrections")


def _replace_check(allowed: str) -> None:
    for table in _TABLES:
        op.drop_constraint(op.f(f"ck_{table}_polarity_known"), table, type_="check")
        op.create_check_constraint("polarity_known", table, f"polarity IN ({allowed})")


def upgrade() -> None:
    _replace_check("'positive', 'negative', 'neutral'")


def downgrade() -> None:
    # Neutral rows cannot be kept under the old rule: they go back to review as untagged model
    # tags (corrections stay, read as negative, the old catch-all).
    op.execute("DELETE FROM feedback_tagging WHERE polarity = 'neutral' AND source = 'model'")
    op.execute(
        "UPDATE feedback_tagging SET polarity = 'negative', needs_review = true "
        "WHERE polarity = 'neutral'"
    )
    op.execute("UPDATE feedback_corrections SET polarity = 'negative' WHERE polarity = 'neutral'")
    _replace_check("'positive', 'negative'")
