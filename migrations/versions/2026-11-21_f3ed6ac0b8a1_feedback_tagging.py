"""Feedback tagging: the codebook (its starting themes seeded here) and its history, tags,
corrections, tagger versions.

Revision ID: f3ed6ac0b8a1
Revises: 06b3c6cc94c0
Create Date: 2026-11-21 10:11:35.043943+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "f3ed6ac0b8a1"
down_revision: str | Sequence[str] | None = "06b3c6cc94c0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The starting codebook (docs/architecture.md, Feedback tagging), frozen here: later edits are
# data, made with `codelift feedback codebook ...` and recorded in feedback_theme_history.
SEED_THEMES: list[dict[str, object]] = [
    {
        "id": "api_discovery",
        "name": "API discovery",
        "description": "Learning or finding APIs, functions, libraries and their usage.",
        "examples": [
            "it showed me a library function I did not know existed",
            "helps me discover the right API without searching the docs",
            "learned a new standard library method from a suggestion",
            "points me to the right class and method in an unfamiliar framework",
            "found the SDK call I was looking for",
        ],
        "polarity_leaning": "positive",
    },
    {
        "id": "boilerplate",
        "name": "Boilerplate",
        "description": "Writing repetitive, routine or boilerplate code for the developer.",
        "examples": [
            "great for the repetitive boilerplate code",
            "saves me typing the same setup code again and again",
            "writes the tedious scaffolding, getters and setters",
            "fills in routine glue code and repeated patterns",
            "handles the ceremony so I only write the logic",
        ],
        "polarity_leaning": "positive",
    },
    {
        "id": "speed",
        "name": "Speed / accelerates coding",
        "description": "Makes coding faster; saves time; productivity.",
        "examples": [
            "I code much faster with it",
            "saves me a lot of time every day",
            "big productivity boost, I finish work sooner",
            "fewer keystrokes, quicker development",
            "accelerates my coding",
        ],
        "polarity_leaning": "positive",
    },
    {
        "id": "documentation",
        "name": "Documentation",
        "description": "Docstrings, comments and documentation written or explained.",
        "examples": [
            "writes good docstrings for my functions",
            "the generated comments help",
            "documents the code and parameters for me",
            "helps write README and API documentation",
            "explains code in comments",
        ],
        "polarity_leaning": "positive",
    },
    {
        "id": "accurate_suggestions",
        "name": "Accurate suggestions",
        "description": "Suggestions are correct, relevant and understand the context.",
        "examples": [
            "the suggestions are spot on",
            "it understood exactly what I wanted",
            "completions are correct and relevant to my code",
            "predicts the code I was about to write",
            "high quality completions that fit the context",
        ],
        "polarity_leaning": "positive",
    },
    {
        "id": "wrong_suggestions",
        "name": "Wrong suggestions / hallucination",
        "description": "Suggestions are wrong, buggy or invent APIs that do not exist.",
        "examples": [
            "it suggested a method that does not exist",
            "the completion had a bug",
            "makes up APIs and functions, hallucinations",
            "suggestions are incorrect or use the wrong variables",
            "suggested outdated or deprecated code",
        ],
        "polarity_leaning": "negative",
    },
    {
        "id": "disruptive",
        "name": "Disruptive / breaks flow",
        "description": "Suggestions are distracting, jarring or interrupt the flow of work.",
        "examples": [
            "the popups are distracting",
            "it keeps interrupting my train of thought",
            "suggestions are annoying and get in the way",
            "breaks my focus and flow",
            "too many suggestions appearing while I type",
        ],
        "polarity_leaning": "negative",
    },
    {
        "id": "latency",
        "name": "Latency / slow",
        "description": "Suggestions arrive too slowly or time out.",
        "examples": [
            "suggestions take too long to appear",
            "it is laggy and slow",
            "completions time out",
            "there is a noticeable delay before the suggestion shows up",
            "response time is fast, no lag",
        ],
        "polarity_leaning": "negative",
    },
    {
        "id": "suggestion_length",
        "name": "Multi-line / suggestion length",
        "description": "The length of suggestions: multi-line blocks, too long or too short.",
        "examples": [
            "I love the multi-line completions",
            "suggestions are too long",
            "completions get cut off after one line",
            "whole function bodies in one suggestion",
            "I only want short single-line suggestions",
        ],
        "polarity_leaning": "neutral",
    },
    {
        "id": "test_generation",
        "name": "Test generation",
        "description": "Writing unit tests, test cases, fixtures and assertions.",
        "examples": [
            "it writes my unit tests for me",
            "generated test cases were useful",
            "helps with assertions, mocks and test fixtures",
            "improves test coverage quickly",
            "the generated tests miss edge cases",
        ],
        "polarity_leaning": "positive",
    },
    {
        "id": "trust_privacy",
        "name": "Trust, privacy, licensing",
        "description": "Worries about code leaving the machine, privacy, security or licences.",
        "examples": [
            "is my code sent to a server?",
            "worried about licensing of the code",
            "concerned about security and data leaving the company",
            "does it copy copyrighted code",
            "I do not trust the code it produces",
        ],
        "polarity_leaning": "negative",
    },
    {
        "id": "feature_request",
        "name": "Feature request",
        "description": "Asks for a new feature, setting or support for a language or IDE.",
        "examples": [
            "please add support for Kotlin",
            "I wish I could configure a shortcut",
            "would be great to have an option to turn it off",
            "can you support another editor",
            "add a setting to change the behaviour",
        ],
        "polarity_leaning": "neutral",
    },
    {
        "id": "other",
        "name": "Other",
        "description": "Anything that fits no other theme.",
        "examples": [
            "ok",
            "no comment",
            "nothing to add",
            "general remark unrelated to suggestions",
        ],
        "polarity_leaning": "neutral",
    },
]


def upgrade() -> None:
    op.create_table(
        "feedback_corrections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("theme_ids", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("polarity", sa.Text(), nullable=False),
        sa.Column("corrected_by", sa.Text(), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint(
            "polarity IN ('positive', 'negative')",
            name=op.f("ck_feedback_corrections_polarity_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback_corrections")),
    )
    op.create_index(
        op.f("ix_feedback_corrections_event_id"),
        "feedback_corrections",
        ["event_id", "id"],
        unique=False,
    )
    op.create_table(
        "feedback_taggers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("codebook_version", sa.Integer(), nullable=False),
        sa.Column("embedder_sha256", sa.Text(), nullable=False),
        sa.Column("n_examples", sa.Integer(), nullable=False),
        sa.Column("n_corrections", sa.Integer(), nullable=False),
        sa.Column("metrics", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("weights", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback_taggers")),
    )
    op.create_table(
        "feedback_themes",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column(
            "examples",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("polarity_leaning", sa.Text(), server_default="neutral", nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("merged_into", sa.Text(), nullable=True),
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
        sa.CheckConstraint("id ~ '^[a-z][a-z0-9_]*$'", name=op.f("ck_feedback_themes_id_slug")),
        sa.CheckConstraint(
            "polarity_leaning IN ('positive', 'negative', 'neutral')",
            name=op.f("ck_feedback_themes_leaning_known"),
        ),
        sa.CheckConstraint(
            "merged_into IS NULL OR NOT active", name=op.f("ck_feedback_themes_merged_inactive")
        ),
        sa.ForeignKeyConstraint(
            ["merged_into"],
            ["feedback_themes.id"],
            name=op.f("fk_feedback_themes_merged_into_feedback_themes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback_themes")),
        sa.UniqueConstraint("name", name=op.f("uq_feedback_themes_name")),
    )
    op.create_table(
        "feedback_tagging",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("polarity", sa.Text(), nullable=False),
        sa.Column("polarity_confidence", sa.Double(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("tagger_id", sa.Integer(), nullable=True),
        sa.Column("codebook_version", sa.Integer(), nullable=False),
        sa.Column("needs_review", sa.Boolean(), nullable=False),
        sa.Column(
            "tagged_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint(
            "polarity IN ('positive', 'negative')", name=op.f("ck_feedback_tagging_polarity_known")
        ),
        sa.CheckConstraint(
            "source IN ('model', 'human')", name=op.f("ck_feedback_tagging_source_known")
        ),
        sa.ForeignKeyConstraint(
            ["tagger_id"],
            ["feedback_taggers.id"],
            name=op.f("fk_feedback_tagging_tagger_id_feedback_taggers"),
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_feedback_tagging")),
    )
    op.create_table(
        "feedback_theme_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("theme_id", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("before", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("after", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint(
            "action IN ('add', 'rename', 'edit', 'merge')",
            name=op.f("ck_feedback_theme_history_action_known"),
        ),
        sa.ForeignKeyConstraint(
            ["theme_id"],
            ["feedback_themes.id"],
            name=op.f("fk_feedback_theme_history_theme_id_feedback_themes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback_theme_history")),
    )
    op.create_index(
        op.f("ix_feedback_theme_history_theme_id"),
        "feedback_theme_history",
        ["theme_id", "id"],
        unique=False,
    )
    op.create_table(
        "feedback_tags",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("theme_id", sa.Text(), nullable=False),
        sa.Column("confidence", sa.Double(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("needs_review", sa.Boolean(), nullable=False),
        sa.CheckConstraint(
            "source IN ('model', 'human')", name=op.f("ck_feedback_tags_source_known")
        ),
        sa.CheckConstraint(
            "confidence BETWEEN 0 AND 1", name=op.f("ck_feedback_tags_confidence_in_unit_range")
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["feedback_tagging.event_id"],
            name=op.f("fk_feedback_tags_event_id_feedback_tagging"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["theme_id"],
            ["feedback_themes.id"],
            name=op.f("fk_feedback_tags_theme_id_feedback_themes"),
        ),
        sa.PrimaryKeyConstraint("event_id", "theme_id", name=op.f("pk_feedback_tags")),
    )
    op.create_index(op.f("ix_feedback_tags_theme_id"), "feedback_tags", ["theme_id"], unique=False)
    themes = sa.table(
        "feedback_themes",
        sa.column("id", sa.Text()),
        sa.column("name", sa.Text()),
        sa.column("description", sa.Text()),
        sa.column("examples", postgresql.JSONB()),
        sa.column("polarity_leaning", sa.Text()),
    )
    history = sa.table(
        "feedback_theme_history",
        sa.column("theme_id", sa.Text()),
        sa.column("action", sa.Text()),
        sa.column("after", postgresql.JSONB()),
        sa.column("actor", sa.Text()),
    )
    op.bulk_insert(themes, SEED_THEMES)
    op.bulk_insert(
        history,
        [
            {"theme_id": theme["id"], "action": "add", "after": theme, "actor": "migration"}
            for theme in SEED_THEMES
        ],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_feedback_tags_theme_id"), table_name="feedback_tags")
    op.drop_table("feedback_tags")
    op.drop_index(op.f("ix_feedback_theme_history_theme_id"), table_name="feedback_theme_history")
    op.drop_table("feedback_theme_history")
    op.drop_table("feedback_tagging")
    op.drop_table("feedback_themes")
    op.drop_table("feedback_taggers")
    op.drop_index(op.f("ix_feedback_corrections_event_id"), table_name="feedback_corrections")
    op.drop_table("feedback_corrections")
