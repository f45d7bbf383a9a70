"""Feedback comments and exposures written straight into the test session."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy.orm import Session

from collector.models import ExposureRow, FeedbackRow

BASE_TIME = dt.datetime(2026, 11, 10, 9, 0, tzinfo=dt.UTC)


def _event(*, user_id: str, language: str, at: dt.datetime) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4(),
        "client_ts": at,
        "received_at": at,
        "schema_version": 1,
        "user_id": user_id,
        "session_id": "session-0001",
        "ide": "vscode",
        "plugin_version": "1.4.2",
        "language": language,
    }


def add_comment(
    session: Session,
    text: str | None,
    *,
    user_id: str = "user-0001",
    language: str = "python",
    rating: int | None = 5,
    rating_scale: str = "stars",
    at: dt.datetime = BASE_TIME,
) -> uuid.UUID:
    """A product feedback row; returns its event id (the comment's id)."""
    row = FeedbackRow(
        **_event(user_id=user_id, language=language, at=at),
        feedback_id=uuid.uuid4(),
        rating_scale=rating_scale,
        rating=rating,
        text=text,
        target="product",
        suggestion_id=None,
    )
    session.add(row)
    session.flush()
    return row.event_id


def add_exposure(
    session: Session, *, user_id: str, arm: str, experiment: str = "ctx-window", at: dt.datetime
) -> None:
    """The user's first exposure to an experiment's arm."""
    session.add(
        ExposureRow(
            **_event(user_id=user_id, language="python", at=at),
            experiment=experiment,
            arm=arm,
            suggestion_id=None,
        )
    )
    session.flush()
