"""Event tables. Append-only; the ORM mapping serves migrations, tests and admin reads only.

The five high-volume tables are range-partitioned by day on ``client_ts``. A unique index on a
partitioned table must contain the partition key, so their primary key is
``(client_ts, event_id)``: a retried event carries the same client timestamp, which is what
makes ``ON CONFLICT DO NOTHING`` de-duplicate it. Time comes first in the key because events
arrive roughly in time order: inserts then land near the right edge of the index rather than on
random pages, which matters once a day's partition outgrows memory (on a 2M-row table, 500-row
de-duplicating inserts were 10-20% faster; the benchmark's small tables show no difference).
Feedback and exposures are small and kept whole (exposures must outlive any retention window
while their experiment runs).

Because those keys carry the client's timestamp, they alone cannot tell a retry that re-stamped
``client_ts`` from a new event. ``event_ids`` can: keyed on the id alone, unpartitioned, one row
per stored event of any type, it is where the store claims an id before writing the event's row
(collector.store). It holds the acceptance window's ids only (collector.event_ids prunes the
rest by ``received_at``, through a BRIN index that costs next to nothing to keep up).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import PARTITION_COLUMN, Base


def _partitioned(*constraints: Any) -> tuple[Any, ...]:
    return (
        PrimaryKeyConstraint("client_ts", "event_id"),
        *constraints,
        {
            "postgresql_partition_by": "RANGE (client_ts)",
            "info": {PARTITION_COLUMN: "client_ts"},
        },
    )


class EventColumns:
    """Columns every event table has; ``language`` and ``user_id`` on every row, by design.

    ``sort_order=-1`` puts them first in every table, ahead of the event's own columns.
    """

    event_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, sort_order=-1)
    client_ts: Mapped[dt.datetime] = mapped_column(primary_key=True, sort_order=-1)
    received_at: Mapped[dt.datetime] = mapped_column(sort_order=-1)
    schema_version: Mapped[int] = mapped_column(SmallInteger, sort_order=-1)
    user_id: Mapped[str] = mapped_column(Text, sort_order=-1)
    session_id: Mapped[str] = mapped_column(Text, sort_order=-1)
    ide: Mapped[str] = mapped_column(Text, sort_order=-1)
    plugin_version: Mapped[str] = mapped_column(Text, sort_order=-1)
    language: Mapped[str] = mapped_column(Text, sort_order=-1)


class CompletionServedRow(EventColumns, Base):
    __tablename__ = "completion_served"
    __table_args__ = _partitioned(
        CheckConstraint("latency_ms >= 0", name="latency_nonnegative"),
    )

    suggestion_id: Mapped[str] = mapped_column(Text)
    request_id: Mapped[str] = mapped_column(Text)
    arms: Mapped[dict[str, str]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    model: Mapped[str] = mapped_column(Text)
    adapter: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[float]
    backend_latency_ms: Mapped[float | None]
    prompt_tokens: Mapped[int]
    completion_chars: Mapped[int]
    completion_lines: Mapped[int]
    finish_reason: Mapped[str] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)


class SuggestionShownRow(EventColumns, Base):
    __tablename__ = "suggestion_shown"
    __table_args__ = _partitioned(
        CheckConstraint("chars >= 0 AND lines >= 0 AND display_ms >= 0", name="nonnegative"),
        CheckConstraint("trigger IN ('auto', 'manual')", name="trigger_known"),
    )

    suggestion_id: Mapped[str] = mapped_column(Text)
    display_ms: Mapped[float]
    chars: Mapped[int]
    lines: Mapped[int]
    multiline: Mapped[bool]
    trigger: Mapped[str] = mapped_column(Text)


class SuggestionOutcomeRow(EventColumns, Base):
    __tablename__ = "suggestion_outcome"
    __table_args__ = _partitioned(
        CheckConstraint(
            "outcome IN ('accepted', 'partially_accepted', 'dismissed', 'ignored')",
            name="outcome_known",
        ),
        CheckConstraint("accepted_chars >= 0 AND accepted_lines >= 0", name="nonnegative"),
    )

    suggestion_id: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(Text)
    accepted_chars: Mapped[int]
    accepted_lines: Mapped[int]
    reason: Mapped[str | None] = mapped_column(Text)


class PersistenceCheckRow(EventColumns, Base):
    __tablename__ = "persistence_check"
    __table_args__ = _partitioned(
        CheckConstraint("checkpoint_s IN (30, 120, 300, 600)", name="checkpoint_known"),
        CheckConstraint("status IN ('present', 'removed')", name="status_known"),
        CheckConstraint("edit_distance_ratio BETWEEN 0 AND 1", name="ratio_in_unit_range"),
    )

    suggestion_id: Mapped[str] = mapped_column(Text)
    checkpoint_s: Mapped[int] = mapped_column(SmallInteger)
    status: Mapped[str] = mapped_column(Text)
    edit_distance_ratio: Mapped[float]
    chars_remaining: Mapped[int]


class TypingVolumeRow(EventColumns, Base):
    __tablename__ = "typing_volume"
    __table_args__ = _partitioned(
        CheckConstraint("window_end >= window_start", name="window_ordered"),
    )

    window_start: Mapped[dt.datetime]
    window_end: Mapped[dt.datetime]
    chars_typed_manual: Mapped[int]
    chars_accepted_ai: Mapped[int]
    chars_deleted: Mapped[int]
    chars_excluded_paste: Mapped[int]
    chars_excluded_bulk: Mapped[int]
    chars_excluded_undo_redo: Mapped[int]


class FeedbackRow(EventColumns, Base):
    __tablename__ = "feedback"
    __table_args__ = (
        CheckConstraint("rating_scale IN ('thumbs', 'stars')", name="rating_scale_known"),
        CheckConstraint("target IN ('suggestion', 'session', 'product')", name="target_known"),
    )

    # Unpartitioned: event_id alone is the key (client_ts stays a plain column).
    client_ts: Mapped[dt.datetime] = mapped_column(primary_key=False, sort_order=-1)
    feedback_id: Mapped[uuid.UUID | None]
    rating_scale: Mapped[str] = mapped_column(Text)
    rating: Mapped[int | None] = mapped_column(SmallInteger)
    text: Mapped[str | None] = mapped_column(Text)
    target: Mapped[str] = mapped_column(Text)
    suggestion_id: Mapped[str | None] = mapped_column(Text)


class ExposureRow(EventColumns, Base):
    __tablename__ = "exposure"
    __table_args__ = (Index(None, "experiment", "user_id", "client_ts"),)

    client_ts: Mapped[dt.datetime] = mapped_column(primary_key=False, sort_order=-1)
    experiment: Mapped[str] = mapped_column(Text)
    arm: Mapped[str] = mapped_column(Text)
    suggestion_id: Mapped[str | None] = mapped_column(Text)


class EventIdRow(Base):
    __tablename__ = "event_ids"
    __table_args__ = (Index(None, "received_at", postgresql_using="brin"),)

    event_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # The table the event's row is in, and that row's client_ts: together its key there.
    event_type: Mapped[str] = mapped_column(Text)
    client_ts: Mapped[dt.datetime]
    received_at: Mapped[dt.datetime]


def event_metadata() -> MetaData:
    """The metadata holding the event tables (partition maintenance and the store read it)."""
    return Base.metadata
