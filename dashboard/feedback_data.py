"""The dashboard's feedback data: theme counts per arm, language and day, comments, corrections.

Like ``dashboard.data``, no Streamlit here (``dashboard.cached`` adds the caching) and no
statistic computed: tables only arrange what ``feedback.store`` returns.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import pandas as pd
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from feedback.store import correct_tags, list_themes, search_comments, theme_counts
from feedback.views import Dimension


def theme_choices(engine: Engine) -> dict[str, str]:
    """Active codebook themes: id -> name."""
    with Session(engine) as session:
        return {theme.id: theme.name for theme in list_themes(session)}


def feedback_counts(
    engine: Engine, *, experiment_key: str | None, start: dt.datetime, end: dt.datetime
) -> dict[str, pd.DataFrame]:
    """Comment, polarity and theme counts per arm (given an experiment), language and day, and
    over everything (the sum of the languages: a comment has one language)."""
    with Session(engine) as session:
        counts = theme_counts(session, start=start, end=end, experiment_key=experiment_key)
    frames: dict[str, pd.DataFrame] = {}
    dimensions: tuple[Dimension, ...] = ("arm", "language", "day")
    for dimension in dimensions:
        rows = [
            {
                dimension: group.group,
                "comments": group.comments,
                "tagged": group.tagged,
                "positive": group.positive,
                "negative": group.negative,
                "neutral": group.neutral,
                "positive_share": group.positive_share,
                "negative_share": group.negative_share,
                **{f"theme:{theme}": n for theme, n in sorted(group.themes.items())},
            }
            for group in counts.by(dimension)
        ]
        frames[dimension] = pd.DataFrame(rows).fillna(
            {"positive_share": float("nan"), "negative_share": float("nan")}
        )
    languages = counts.by("language")
    themes: dict[str, int] = {}
    for group in languages:
        for theme, n in group.themes.items():
            themes[theme] = themes.get(theme, 0) + n
    tagged = sum(g.tagged for g in languages)
    positive = sum(g.positive for g in languages)
    negative = sum(g.negative for g in languages)
    frames["overall"] = pd.DataFrame(
        [
            {
                "comments": sum(g.comments for g in languages),
                "tagged": tagged,
                "positive": positive,
                "negative": negative,
                "neutral": sum(g.neutral for g in languages),
                "positive_share": positive / tagged if tagged else None,
                "negative_share": negative / tagged if tagged else None,
            }
        ]
    )
    frames["themes"] = pd.DataFrame(
        sorted(themes.items(), key=lambda item: -item[1]), columns=["theme", "comments"]
    )
    return frames


COMMENT_COLUMNS = [
    "feedback_id",
    "client_ts",
    "language",
    "arm",
    "rating",
    "text",
    "themes",
    "polarity",
    "polarity_confidence",
    "confidence",
    "tag_confidence",
    "source",
    "needs_review",
]


def comments_frame(
    engine: Engine,
    *,
    text_query: str | None,
    theme_ids: tuple[str, ...],
    polarity: str | None,
    language: str | None,
    experiment_key: str | None,
    needs_review: bool | None = None,
    max_confidence: float | None = None,
    limit: int = 200,
) -> pd.DataFrame:
    """Comments matching the filters, newest first, with their tags and confidences."""
    with Session(engine) as session:
        comments = search_comments(
            session,
            text=text_query or None,
            theme_ids=theme_ids or None,
            polarity=polarity,
            language=language,
            experiment_key=experiment_key,
            needs_review=needs_review,
            max_confidence=max_confidence,
            limit=limit,
        )
    return pd.DataFrame(
        [
            {
                "feedback_id": str(comment.feedback_id),
                "client_ts": comment.client_ts,
                "language": comment.language,
                "arm": comment.arm,
                "rating": comment.rating,
                "text": comment.text,
                "themes": [tag.theme_id for tag in comment.tags],
                "polarity": comment.polarity,
                "polarity_confidence": comment.polarity_confidence,
                "confidence": comment.confidence,
                "tag_confidence": ", ".join(
                    f"{tag.theme_id} {tag.confidence:.2f}" for tag in comment.tags
                ),
                "source": comment.source or "untagged",
                "needs_review": comment.needs_review,
            }
            for comment in comments
        ],
        columns=COMMENT_COLUMNS,
    )


@dataclasses.dataclass(frozen=True)
class TagCorrection:
    """A person's tags for one comment."""

    feedback_id: uuid.UUID
    theme_ids: tuple[str, ...]
    polarity: str


def save_corrections(engine: Engine, corrections: list[TagCorrection], *, corrected_by: str) -> int:
    """Write the corrections in one transaction (all or none); how many were written."""
    with Session(engine) as session:
        for correction in corrections:
            correct_tags(
                session,
                feedback_id=correction.feedback_id,
                theme_ids=list(correction.theme_ids),
                polarity=correction.polarity,
                corrected_by=corrected_by,
            )
        session.commit()
    return len(corrections)
