"""Event store (partitioned event tables) and API keys.

Revision ID: af54acd21642
Revises:
Create Date: 2026-11-21 07:29:10.509684+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "af54acd21642"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.ARRAY(sa.String(length=16)), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "scopes <@ ARRAY['ingest', 'serve', 'admin']::varchar[]",
            name=op.f("ck_api_keys_known_scopes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_table(
        "completion_served",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("client_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("schema_version", sa.SmallInteger(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("ide", sa.Text(), nullable=False),
        sa.Column("plugin_version", sa.Text(), nullable=False),
        sa.Column("language", sa.Text(), nullable=False),
        sa.Column("suggestion_id", sa.Text(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column(
            "arms",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("adapter", sa.Text(), nullable=True),
        sa.Column("latency_ms", sa.Double(), nullable=False),
        sa.Column("backend_latency_ms", sa.Double(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_chars", sa.Integer(), nullable=False),
        sa.Column("completion_lines", sa.Integer(), nullable=False),
        sa.Column("finish_reason", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "latency_ms >= 0", name=op.f("ck_completion_served_latency_nonnegative")
        ),
        sa.PrimaryKeyConstraint("client_ts", "event_id", name=op.f("pk_completion_served")),
        info={"partition_by_day": "client_ts"},
        postgresql_partition_by="RANGE (client_ts)",
    )
    op.create_table(
        "exposure",
        sa.Column("client_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("schema_version", sa.SmallInteger(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("ide", sa.Text(), nullable=False),
        sa.Column("plugin_version", sa.Text(), nullable=False),
        sa.Column("language", sa.Text(), nullable=False),
        sa.Column("experiment", sa.Text(), nullable=False),
        sa.Column("arm", sa.Text(), nullable=False),
        sa.Column("suggestion_id", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_exposure")),
    )
    op.create_index(
        op.f("ix_exposure_experiment"),
        "exposure",
        ["experiment", "user_id", "client_ts"],
        unique=False,
    )
    op.create_table(
        "feedback",
        sa.Column("client_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("schema_version", sa.SmallInteger(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("ide", sa.Text(), nullable=False),
        sa.Column("plugin_version", sa.Text(), nullable=False),
        sa.Column("language", sa.Text(), nullable=False),
        sa.Column("feedback_id", sa.Uuid(), nullable=True),
        sa.Column("rating_scale", sa.Text(), nullable=False),
        sa.Column("rating", sa.SmallInteger(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("suggestion_id", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "rating_scale IN ('thumbs', 'stars')", name=op.f("ck_feedback_rating_scale_known")
        ),
        sa.CheckConstraint(
            "target IN ('suggestion', 'session', 'product')", name=op.f("ck_feedback_target_known")
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_feedback")),
    )
    op.create_table(
        "persistence_check",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("client_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("schema_version", sa.SmallInteger(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("ide", sa.Text(), nullable=False),
        sa.Column("plugin_version", sa.Text(), nullable=False),
        sa.Column("language", sa.Text(), nullable=False),
        sa.Column("suggestion_id", sa.Text(), nullable=False),
        sa.Column("checkpoint_s", sa.SmallInteger(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("edit_distance_ratio", sa.Double(), nullable=False),
        sa.Column("chars_remaining", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "status IN ('present', 'removed')", name=op.f("ck_persistence_check_status_known")
        ),
        sa.CheckConstraint(
            "checkpoint_s IN (30, 120, 300, 600)",
            name=op.f("ck_persistence_check_checkpoint_known"),
        ),
        sa.CheckConstraint(
            "edit_distance_ratio BETWEEN 0 AND 1",
            name=op.f("ck_persistence_check_ratio_in_unit_range"),
        ),
        sa.PrimaryKeyConstraint("client_ts", "event_id", name=op.f("pk_persistence_check")),
        info={"partition_by_day": "client_ts"},
        postgresql_partition_by="RANGE (client_ts)",
    )
    op.create_table(
        "suggestion_outcome",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("client_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("schema_version", sa.SmallInteger(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("ide", sa.Text(), nullable=False),
        sa.Column("plugin_version", sa.Text(), nullable=False),
        sa.Column("language", sa.Text(), nullable=False),
        sa.Column("suggestion_id", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("accepted_chars", sa.Integer(), nullable=False),
        sa.Column("accepted_lines", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "outcome IN ('accepted', 'partially_accepted', 'dismissed', 'ignored')",
            name=op.f("ck_suggestion_outcome_outcome_known"),
        ),
        sa.CheckConstraint(
            "accepted_chars >= 0 AND accepted_lines >= 0",
            name=op.f("ck_suggestion_outcome_nonnegative"),
        ),
        sa.PrimaryKeyConstraint("client_ts", "event_id", name=op.f("pk_suggestion_outcome")),
        info={"partition_by_day": "client_ts"},
        postgresql_partition_by="RANGE (client_ts)",
    )
    op.create_table(
        "suggestion_shown",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("client_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("schema_version", sa.SmallInteger(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("ide", sa.Text(), nullable=False),
        sa.Column("plugin_version", sa.Text(), nullable=False),
        sa.Column("language", sa.Text(), nullable=False),
        sa.Column("suggestion_id", sa.Text(), nullable=False),
        sa.Column("display_ms", sa.Double(), nullable=False),
        sa.Column("chars", sa.Integer(), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("multiline", sa.Boolean(), nullable=False),
        sa.Column("trigger", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "trigger IN ('auto', 'manual')", name=op.f("ck_suggestion_shown_trigger_known")
        ),
        sa.CheckConstraint(
            "chars >= 0 AND lines >= 0 AND display_ms >= 0",
            name=op.f("ck_suggestion_shown_nonnegative"),
        ),
        sa.PrimaryKeyConstraint("client_ts", "event_id", name=op.f("pk_suggestion_shown")),
        info={"partition_by_day": "client_ts"},
        postgresql_partition_by="RANGE (client_ts)",
    )
    op.create_table(
        "typing_volume",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("client_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("schema_version", sa.SmallInteger(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("ide", sa.Text(), nullable=False),
        sa.Column("plugin_version", sa.Text(), nullable=False),
        sa.Column("language", sa.Text(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("chars_typed_manual", sa.Integer(), nullable=False),
        sa.Column("chars_accepted_ai", sa.Integer(), nullable=False),
        sa.Column("chars_deleted", sa.Integer(), nullable=False),
        sa.Column("chars_excluded_paste", sa.Integer(), nullable=False),
        sa.Column("chars_excluded_bulk", sa.Integer(), nullable=False),
        sa.Column("chars_excluded_undo_redo", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "window_end >= window_start", name=op.f("ck_typing_volume_window_ordered")
        ),
        sa.PrimaryKeyConstraint("client_ts", "event_id", name=op.f("pk_typing_volume")),
        info={"partition_by_day": "client_ts"},
        postgresql_partition_by="RANGE (client_ts)",
    )


def downgrade() -> None:
    op.drop_table("typing_volume")
    op.drop_table("suggestion_shown")
    op.drop_table("suggestion_outcome")
    op.drop_table("persistence_check")
    op.drop_table("feedback")
    op.drop_index(op.f("ix_exposure_experiment"), table_name="exposure")
    op.drop_table("exposure")
    op.drop_table("completion_served")
    op.drop_table("api_keys")
