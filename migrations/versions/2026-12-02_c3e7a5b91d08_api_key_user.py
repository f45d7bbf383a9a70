"""A personal API key names the developer it belongs to.

IDE clients (Continue, Tabby, llama.vscode, llm-ls) send no ``user`` in their bodies; a key
bound to a developer says who asks, and the gateway serves and logs the request as theirs.

Revision ID: c3e7a5b91d08
Revises: b81f5d3e9a47
Create Date: 2026-12-02 15:10:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c3e7a5b91d08"
down_revision: str | Sequence[str] | None = "b81f5d3e9a47"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("user_id", sa.String(length=128), nullable=True))


def downgrade() -> None:
    op.drop_column("api_keys", "user_id")
