"""Tables of the feedback tagger: the codebook and its history, tags, corrections, tagger versions.

Tags and corrections point at a feedback comment by the ``event_id`` of its ``feedback`` row,
without a foreign key: event tables stay free of cross-table constraints (Citus scale-out path).
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    LargeBinary,
    PrimaryKeyConstraint,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Base

# Requests, questions, measurements and balanced verdicts are neutral.
POLARITIES = ("positive", "negative", "neutral")
TAG_SOURCES = ("model", "human")
THEME_ACTIONS = ("add", "rename", "edit", "merge")


class ThemeRow(Base):
    """A theme of the codebook; merged themes stay (inactive) so old references resolve."""

    __tablename__ = "feedback_themes"
    __table_args__ = (
        CheckConstraint("id ~ '^[a-z][a-z0-9_]*$'", name="id_slug"),
        CheckConstraint(
            "polarity_leaning IN ('positive', 'negative', 'neutral')", name="leaning_known"
        ),
        CheckConstraint("merged_into IS NULL OR NOT active", name="merged_inactive"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    description: Mapped[str] = mapped_column(Text)
    examples: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    polarity_leaning: Mapped[str] = mapped_column(Text, server_default="neutral")
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    merged_into: Mapped[str | None] = mapped_column(Text, ForeignKey("feedback_themes.id"))
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class ThemeHistoryRow(Base):
    """One edit of the codebook; the largest id is the codebook's version."""

    __tablename__ = "feedback_theme_history"
    __table_args__ = (
        CheckConstraint("action IN ('add', 'rename', 'edit', 'merge')", name="action_known"),
        Index(None, "theme_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    theme_id: Mapped[str] = mapped_column(Text, ForeignKey("feedback_themes.id"))
    action: Mapped[str] = mapped_column(Text)
    before: Mapped[dict[str, object] | None] = mapped_column(JSONB)
    after: Mapped[dict[str, object]] = mapped_column(JSONB)
    actor: Mapped[str] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class TaggerRow(Base):
    """One version of the trained tagger, with the figures it was evaluated at."""

    __tablename__ = "feedback_taggers"

    id: Mapped[int] = mapped_column(primary_key=True)
    codebook_version: Mapped[int]
    embedder_sha256: Mapped[str] = mapped_column(Text)
    n_examples: Mapped[int]
    n_corrections: Mapped[int]
    # Cross-validated figures (top-1, polarity accuracy, macro-F1) when there was enough data.
    metrics: Mapped[dict[str, object]] = mapped_column(JSONB)
    # The classifier's weights (numpy .npz bytes); small: themes × embedding size.
    weights: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class TaggingRow(Base):
    """The tagging state of one comment: its polarity and who decided it."""

    __tablename__ = "feedback_tagging"
    __table_args__ = (
        CheckConstraint("polarity IN ('positive', 'negative', 'neutral')", name="polarity_known"),
        CheckConstraint("source IN ('model', 'human')", name="source_known"),
    )

    event_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    polarity: Mapped[str] = mapped_column(Text)
    polarity_confidence: Mapped[float]
    source: Mapped[str] = mapped_column(Text)
    # Which tagger and codebook produced a model tagging: a newer one means tag again.
    tagger_id: Mapped[int | None] = mapped_column(ForeignKey("feedback_taggers.id"))
    codebook_version: Mapped[int]
    needs_review: Mapped[bool]
    tagged_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class TagRow(Base):
    """One theme on one comment, with the tagger's confidence (1.0 when a person set it)."""

    __tablename__ = "feedback_tags"
    __table_args__ = (
        PrimaryKeyConstraint("event_id", "theme_id"),
        CheckConstraint("confidence BETWEEN 0 AND 1", name="confidence_in_unit_range"),
        CheckConstraint("source IN ('model', 'human')", name="source_known"),
        Index(None, "theme_id"),
    )

    event_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("feedback_tagging.event_id", ondelete="CASCADE")
    )
    theme_id: Mapped[str] = mapped_column(Text, ForeignKey("feedback_themes.id"))
    confidence: Mapped[float]
    source: Mapped[str] = mapped_column(Text)
    needs_review: Mapped[bool]


class CorrectionRow(Base):
    """A person's correction of a comment's tags: the training examples of the tagger."""

    __tablename__ = "feedback_corrections"
    __table_args__ = (
        CheckConstraint("polarity IN ('positive', 'negative', 'neutral')", name="polarity_known"),
        Index(None, "event_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[uuid.UUID]
    theme_ids: Mapped[list[str]] = mapped_column(JSONB)
    polarity: Mapped[str] = mapped_column(Text)
    corrected_by: Mapped[str] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
