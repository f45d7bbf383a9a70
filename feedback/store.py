"""Read and write feedback tags for the dashboard and the CLI, given an ORM session.

Comments are ``feedback`` rows with a text; a comment is identified by the feedback event's
``event_id``. A person's correction replaces the model's tags and is never overwritten by the
tagger. Write functions flush but leave the commit to the caller.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, Subquery, and_, delete, exists, func, select
from sqlalchemy.dialects.postgresql import distinct_on, insert
from sqlalchemy.orm import Session

from collector.models import ExposureRow, FeedbackRow
from feedback.codebook import codebook_version, list_themes
from feedback.errors import FeedbackInputError, UnknownFeedbackError, UnknownThemeError
from feedback.models import POLARITIES, CorrectionRow, TaggingRow, TagRow, ThemeRow
from feedback.views import CommentView, Dimension, GroupCounts, TagView, ThemeCounts

__all__ = [
    "comment_exists",
    "correct_tags",
    "list_themes",
    "search_comments",
    "theme_counts",
]

# A select of any columns (SQLAlchemy 2.1 types a select's row as a variadic tuple).
AnySelect = Select[*tuple[Any, ...]]

# A dashboard page never needs more rows than this at once.
MAX_LIMIT = 1000


def _first_exposures(experiment_key: str) -> Subquery:
    """Each exposed user's arm of the experiment and when they were first exposed."""
    return (
        select(
            ExposureRow.user_id,
            ExposureRow.arm,
            ExposureRow.client_ts.label("exposed_at"),
        )
        .where(ExposureRow.experiment == experiment_key)
        .ext(distinct_on(ExposureRow.user_id))
        .order_by(ExposureRow.user_id, ExposureRow.client_ts)
        .subquery("first_exposure")
    )


def with_arm(stmt: AnySelect, experiment_key: str) -> tuple[AnySelect, Subquery]:
    """Keep comments written after the user's first exposure to the experiment."""
    exposure = _first_exposures(experiment_key)
    joined = stmt.join(
        exposure,
        and_(
            exposure.c.user_id == FeedbackRow.user_id,
            FeedbackRow.client_ts >= exposure.c.exposed_at,
        ),
    )
    return joined, exposure


def comment_conditions(
    start: dt.datetime | None, end: dt.datetime | None
) -> list[ColumnElement[bool]]:
    """Comments (feedback with a text) written in [start, end); naive datetimes are refused."""
    for name, moment in (("start", start), ("end", end)):
        if moment is not None and moment.tzinfo is None:
            raise FeedbackInputError(name, "must be timezone-aware")
    conditions: list[ColumnElement[bool]] = [FeedbackRow.text.is_not(None)]
    if start is not None:
        conditions.append(FeedbackRow.client_ts >= start)
    if end is not None:
        conditions.append(FeedbackRow.client_ts < end)
    return conditions


def _check_polarity(polarity: str | None) -> None:
    if polarity is not None and polarity not in POLARITIES:
        raise FeedbackInputError("polarity", f"must be one of {POLARITIES}, got {polarity!r}")


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_comments(
    session: Session,
    *,
    text: str | None = None,
    theme_ids: Collection[str] | None = None,
    polarity: str | None = None,
    language: str | None = None,
    experiment_key: str | None = None,
    arm: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    tagged: bool | None = None,
    needs_review: bool | None = None,
    max_confidence: float | None = None,
    limit: int = 100,
) -> list[CommentView]:
    """Comments matching every given filter, newest first (untagged ones too, unless filtered).

    ``max_confidence`` keeps tagged comments whose confidence (the lower of the top theme's and
    the polarity's) is at most that value: where a reviewer's time is best spent.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise FeedbackInputError("limit", f"must be between 1 and {MAX_LIMIT}, got {limit}")
    if max_confidence is not None and not 0.0 <= max_confidence <= 1.0:
        raise FeedbackInputError("max_confidence", f"must be between 0 and 1, got {max_confidence}")
    if arm is not None and experiment_key is None:
        raise FeedbackInputError("arm", "filtering on an arm needs experiment_key")
    _check_polarity(polarity)
    stmt = select(
        FeedbackRow.event_id,
        FeedbackRow.text,
        FeedbackRow.rating,
        FeedbackRow.rating_scale,
        FeedbackRow.target,
        FeedbackRow.language,
        FeedbackRow.user_id,
        FeedbackRow.client_ts,
        TaggingRow.polarity,
        TaggingRow.polarity_confidence,
        TaggingRow.source,
        TaggingRow.needs_review,
    ).outerjoin(TaggingRow, TaggingRow.event_id == FeedbackRow.event_id)
    conditions = comment_conditions(start, end)
    if experiment_key is not None:
        stmt, exposure = with_arm(stmt, experiment_key)
        stmt = stmt.add_columns(exposure.c.arm)
        if arm is not None:
            conditions.append(exposure.c.arm == arm)
    if text:
        conditions.append(FeedbackRow.text.ilike(_like_pattern(text), escape="\\"))
    if theme_ids:
        conditions.append(
            exists().where(TagRow.event_id == FeedbackRow.event_id, TagRow.theme_id.in_(theme_ids))
        )
    if polarity is not None:
        conditions.append(TaggingRow.polarity == polarity)
    if language is not None:
        conditions.append(FeedbackRow.language == language)
    if tagged is not None:
        conditions.append(
            TaggingRow.event_id.is_not(None) if tagged else TaggingRow.event_id.is_(None)
        )
    if needs_review is not None:
        conditions.append(TaggingRow.needs_review.is_(needs_review))
    if max_confidence is not None:
        top_theme = (
            select(func.max(TagRow.confidence))
            .where(TagRow.event_id == FeedbackRow.event_id)
            .scalar_subquery()
        )
        conditions.append(func.least(TaggingRow.polarity_confidence, top_theme) <= max_confidence)
    stmt = (
        stmt.where(*conditions)
        .order_by(FeedbackRow.client_ts.desc(), FeedbackRow.event_id)
        .limit(limit)
    )
    rows = session.execute(stmt).all()
    tags = _tags_of(session, [row.event_id for row in rows])
    return [
        CommentView(
            feedback_id=row.event_id,
            text=row.text,
            rating=row.rating,
            rating_scale=row.rating_scale,
            target=row.target,
            language=row.language,
            user_id=row.user_id,
            client_ts=row.client_ts,
            tags=tuple(tags.get(row.event_id, ())),
            polarity=row.polarity,
            polarity_confidence=row.polarity_confidence,
            source=row.source,
            needs_review=bool(row.needs_review),
            arm=row.arm if experiment_key is not None else None,
        )
        for row in rows
    ]


def _tags_of(session: Session, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[TagView]]:
    if not event_ids:
        return {}
    rows = session.execute(
        select(TagRow, ThemeRow.name)
        .join(ThemeRow, ThemeRow.id == TagRow.theme_id)
        .where(TagRow.event_id.in_(event_ids))
        .order_by(TagRow.event_id, TagRow.confidence.desc(), TagRow.theme_id)
    ).all()
    found: dict[uuid.UUID, list[TagView]] = defaultdict(list)
    for tag, name in rows:
        found[tag.event_id].append(
            TagView(
                theme_id=tag.theme_id,
                theme_name=name,
                confidence=tag.confidence,
                source=tag.source,
                needs_review=tag.needs_review,
            )
        )
    return found


def group_column(dimension: Dimension, exposure: Subquery | None) -> ColumnElement[str]:
    """The column a dimension groups comments by (the arm needs the exposure subquery)."""
    if dimension == "arm":
        assert exposure is not None
        arm: ColumnElement[str] = exposure.c.arm
        return arm
    if dimension == "language":
        return FeedbackRow.language.expression
    # Days are cut in UTC, like the partitions and the rollups.
    return func.to_char(func.timezone("UTC", FeedbackRow.client_ts), "YYYY-MM-DD")


def theme_counts(
    session: Session,
    *,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    language: str | None = None,
    experiment_key: str | None = None,
) -> ThemeCounts:
    """Comments, polarity and theme counts per language and day, and per arm given an experiment.

    With ``experiment_key`` only comments written after the user's first exposure count.
    """
    conditions = comment_conditions(start, end)
    if language is not None:
        conditions.append(FeedbackRow.language == language)
    dimensions: list[Dimension] = ["language", "day"]
    if experiment_key is not None:
        dimensions.insert(0, "arm")
    groups: list[GroupCounts] = []
    for dimension in dimensions:
        groups.extend(_counts_by(session, dimension, conditions, experiment_key))
    return ThemeCounts(groups=tuple(groups))


def _counts_by(
    session: Session,
    dimension: Dimension,
    conditions: list[ColumnElement[bool]],
    experiment_key: str | None,
) -> list[GroupCounts]:
    def scoped(stmt: AnySelect) -> tuple[AnySelect, ColumnElement[str]]:
        exposure = None
        if experiment_key is not None:
            stmt, exposure = with_arm(stmt, experiment_key)
        group = group_column(dimension, exposure)
        return stmt.add_columns(group.label("grp")).where(*conditions).group_by(group), group

    totals, group = scoped(
        select(
            func.count().label("comments"),
            func.count(TaggingRow.event_id).label("tagged"),
            func.count().filter(TaggingRow.polarity == "positive").label("positive"),
            func.count().filter(TaggingRow.polarity == "negative").label("negative"),
            func.count().filter(TaggingRow.polarity == "neutral").label("neutral"),
        )
        .select_from(FeedbackRow)
        .outerjoin(TaggingRow, TaggingRow.event_id == FeedbackRow.event_id)
    )
    per_theme, _ = scoped(
        select(TagRow.theme_id, func.count().label("n"))
        .select_from(FeedbackRow)
        .join(TagRow, TagRow.event_id == FeedbackRow.event_id)
    )
    themes: dict[str, dict[str, int]] = defaultdict(dict)
    for row in session.execute(per_theme.group_by(TagRow.theme_id)).all():
        themes[row.grp][row.theme_id] = row.n
    return [
        GroupCounts(
            dimension=dimension,
            group=row.grp,
            comments=row.comments,
            tagged=row.tagged,
            positive=row.positive,
            negative=row.negative,
            neutral=row.neutral,
            themes=themes.get(row.grp, {}),
        )
        for row in session.execute(totals.order_by(group)).all()
    ]


def comment_exists(session: Session, feedback_id: uuid.UUID) -> bool:
    """Whether a feedback comment (a feedback row with a text) has this id."""
    return (
        session.scalar(
            select(FeedbackRow.event_id).where(
                FeedbackRow.event_id == feedback_id, FeedbackRow.text.is_not(None)
            )
        )
        is not None
    )


def _active_theme_ids(session: Session, theme_ids: Sequence[str]) -> list[str]:
    if not theme_ids:
        raise FeedbackInputError("theme_ids", "a comment needs at least one theme")
    wanted = list(dict.fromkeys(theme_ids))
    found = {
        row.id: row
        for row in session.scalars(select(ThemeRow).where(ThemeRow.id.in_(wanted))).all()
    }
    for theme_id in wanted:
        row = found.get(theme_id)
        if row is None:
            raise UnknownThemeError(f"theme_ids: no theme {theme_id!r}")
        if not row.active:
            raise UnknownThemeError(
                f"theme_ids: theme {theme_id!r} was merged into {row.merged_into!r}"
            )
    return wanted


def correct_tags(
    session: Session,
    *,
    feedback_id: uuid.UUID,
    theme_ids: Sequence[str],
    polarity: str,
    corrected_by: str,
) -> None:
    """Record a person's tags for a comment; they replace the model's and stay authoritative."""
    _check_polarity(polarity)
    if not corrected_by.strip():
        raise FeedbackInputError("corrected_by", "must name who made the correction")
    if not comment_exists(session, feedback_id):
        raise UnknownFeedbackError(f"feedback_id: no feedback comment {feedback_id}")
    themes = _active_theme_ids(session, theme_ids)
    session.add(
        CorrectionRow(
            event_id=feedback_id, theme_ids=themes, polarity=polarity, corrected_by=corrected_by
        )
    )
    tagging = {
        "event_id": feedback_id,
        "polarity": polarity,
        "polarity_confidence": 1.0,
        "source": "human",
        "tagger_id": None,
        "codebook_version": codebook_version(session),
        "needs_review": False,
        "tagged_at": func.now(),
    }
    upsert = insert(TaggingRow).values(tagging)
    session.execute(
        upsert.on_conflict_do_update(
            index_elements=[TaggingRow.event_id],
            set_={k: upsert.excluded[k] for k in tagging if k != "event_id"},
        )
    )
    session.execute(delete(TagRow).where(TagRow.event_id == feedback_id))
    session.execute(
        insert(TagRow),
        [
            {
                "event_id": feedback_id,
                "theme_id": theme_id,
                "confidence": 1.0,
                "source": "human",
                "needs_review": False,
            }
            for theme_id in themes
        ],
    )
    session.flush()
