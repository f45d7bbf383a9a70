"""The codebook: themes people can add, rename, edit and merge, every change kept in history.

The codebook's version is the id of its latest history row: tagging made under an older
version is redone by the tagger.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from feedback.errors import FeedbackInputError, UnknownThemeError
from feedback.models import TagRow, ThemeHistoryRow, ThemeRow
from feedback.options import LEANINGS
from feedback.views import ThemeView

OTHER_THEME = "other"
_SLUG = re.compile(r"^[a-z][a-z0-9_]*$")


def _view(row: ThemeRow) -> ThemeView:
    return ThemeView(
        id=row.id,
        name=row.name,
        description=row.description,
        examples=tuple(row.examples),
        polarity_leaning=row.polarity_leaning,
        active=row.active,
        merged_into=row.merged_into,
    )


def _snapshot(row: ThemeRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "examples": list(row.examples),
        "polarity_leaning": row.polarity_leaning,
        "active": row.active,
        "merged_into": row.merged_into,
    }


def list_themes(session: Session, *, include_inactive: bool = False) -> list[ThemeView]:
    """The codebook's themes by name ('other' last); merged themes only when asked."""
    stmt = select(ThemeRow).order_by(ThemeRow.id == OTHER_THEME, ThemeRow.name)
    if not include_inactive:
        stmt = stmt.where(ThemeRow.active)
    return [_view(row) for row in session.scalars(stmt).all()]


def codebook_version(session: Session) -> int:
    """The id of the codebook's latest change (0 for an empty codebook)."""
    return session.scalar(select(func.coalesce(func.max(ThemeHistoryRow.id), 0))) or 0


def merged_into_map(session: Session) -> dict[str, str]:
    """Each merged theme's final active theme (merges can chain)."""
    rows = session.execute(
        select(ThemeRow.id, ThemeRow.merged_into).where(ThemeRow.merged_into.is_not(None))
    ).all()
    links: dict[str, str | None] = dict(rows)
    resolved: dict[str, str] = {}
    for theme_id, first in links.items():
        target = first
        while target is not None and target in links:
            target = links[target]
        if target is not None:
            resolved[theme_id] = target
    return resolved


def _record(
    session: Session,
    *,
    row: ThemeRow,
    action: str,
    before: dict[str, Any] | None,
    actor: str,
) -> None:
    session.flush()
    session.add(
        ThemeHistoryRow(
            theme_id=row.id, action=action, before=before, after=_snapshot(row), actor=actor
        )
    )
    session.flush()


def _check_text(field: str, value: str) -> str:
    value = value.strip()
    if not value:
        raise FeedbackInputError(field, "must not be empty")
    return value


def _check_actor(actor: str) -> None:
    _check_text("actor", actor)


def _get_active(session: Session, theme_id: str) -> ThemeRow:
    row = session.get(ThemeRow, theme_id)
    if row is None:
        raise UnknownThemeError(f"no theme {theme_id!r}")
    if not row.active:
        raise UnknownThemeError(f"theme {theme_id!r} was merged into {row.merged_into!r}")
    return row


def _check_name_free(session: Session, name: str, *, theme_id: str | None = None) -> None:
    holder = session.scalar(select(ThemeRow.id).where(func.lower(ThemeRow.name) == name.lower()))
    if holder is not None and holder != theme_id:
        raise FeedbackInputError("name", f"{name!r} is already the name of theme {holder!r}")


def add_theme(
    session: Session,
    *,
    theme_id: str,
    name: str,
    description: str,
    examples: Sequence[str] = (),
    polarity_leaning: str = "neutral",
    actor: str,
) -> ThemeView:
    """Add a theme to the codebook."""
    _check_actor(actor)
    if not _SLUG.match(theme_id):
        raise FeedbackInputError("theme_id", "must be lower-case letters, digits and '_'")
    if session.get(ThemeRow, theme_id) is not None:
        raise FeedbackInputError("theme_id", f"theme {theme_id!r} already exists")
    if polarity_leaning not in LEANINGS:
        raise FeedbackInputError("polarity_leaning", f"must be one of {LEANINGS}")
    name = _check_text("name", name)
    _check_name_free(session, name)
    row = ThemeRow(
        id=theme_id,
        name=name,
        description=_check_text("description", description),
        examples=[e.strip() for e in examples if e.strip()],
        polarity_leaning=polarity_leaning,
        active=True,
    )
    session.add(row)
    _record(session, row=row, action="add", before=None, actor=actor)
    return _view(row)


def rename_theme(session: Session, *, theme_id: str, name: str, actor: str) -> ThemeView:
    """Give a theme a new name; its id, tags and corrections stay."""
    _check_actor(actor)
    row = _get_active(session, theme_id)
    name = _check_text("name", name)
    _check_name_free(session, name, theme_id=theme_id)
    before = _snapshot(row)
    row.name = name
    row.updated_at = func.now()
    _record(session, row=row, action="rename", before=before, actor=actor)
    return _view(row)


def edit_theme(
    session: Session,
    *,
    theme_id: str,
    actor: str,
    description: str | None = None,
    examples: Sequence[str] | None = None,
    polarity_leaning: str | None = None,
) -> ThemeView:
    """Change a theme's description, example phrases or polarity leaning."""
    _check_actor(actor)
    row = _get_active(session, theme_id)
    before = _snapshot(row)
    if description is not None:
        row.description = _check_text("description", description)
    if examples is not None:
        row.examples = [e.strip() for e in examples if e.strip()]
    if polarity_leaning is not None:
        if polarity_leaning not in LEANINGS:
            raise FeedbackInputError("polarity_leaning", f"must be one of {LEANINGS}")
        row.polarity_leaning = polarity_leaning
    row.updated_at = func.now()
    _record(session, row=row, action="edit", before=before, actor=actor)
    return _view(row)


def merge_themes(session: Session, *, source_id: str, target_id: str, actor: str) -> ThemeView:
    """Fold ``source_id`` into ``target_id``: its tags and examples move, it becomes inactive."""
    _check_actor(actor)
    if source_id == target_id:
        raise FeedbackInputError("target_id", "a theme cannot be merged into itself")
    if source_id == OTHER_THEME:
        raise FeedbackInputError("source_id", "the 'other' theme cannot be merged away")
    source = _get_active(session, source_id)
    target = _get_active(session, target_id)
    source_before, target_before = _snapshot(source), _snapshot(target)
    moved = select(
        TagRow.event_id,
        TagRow.confidence,
        TagRow.source,
        TagRow.needs_review,
    ).where(TagRow.theme_id == source_id)
    for tag in session.execute(moved).all():
        stmt = insert(TagRow).values(
            event_id=tag.event_id,
            theme_id=target_id,
            confidence=tag.confidence,
            source=tag.source,
            needs_review=tag.needs_review,
        )
        # A comment tagged with both keeps the stronger evidence; a person's tag wins.
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=[TagRow.event_id, TagRow.theme_id],
                set_={
                    "confidence": func.greatest(TagRow.confidence, stmt.excluded.confidence),
                    "source": func.least(TagRow.source, stmt.excluded.source),
                    "needs_review": TagRow.needs_review.and_(stmt.excluded.needs_review),
                },
            )
        )
    session.execute(delete(TagRow).where(TagRow.theme_id == source_id))
    target.examples = list(dict.fromkeys([*target.examples, *source.examples]))
    target.updated_at = func.now()
    session.execute(
        update(ThemeRow)
        .where(ThemeRow.id == source_id)
        .values(active=False, merged_into=target_id, updated_at=func.now())
    )
    session.refresh(source)
    _record(session, row=source, action="merge", before=source_before, actor=actor)
    _record(session, row=target, action="edit", before=target_before, actor=actor)
    return _view(target)
