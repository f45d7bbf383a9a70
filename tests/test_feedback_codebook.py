"""Codebook edits: add, rename, edit and merge themes, each kept in history."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from feedback.codebook import (
    add_theme,
    codebook_version,
    edit_theme,
    list_themes,
    merge_themes,
    merged_into_map,
    rename_theme,
)
from feedback.errors import FeedbackInputError, UnknownThemeError
from feedback.models import ThemeHistoryRow
from feedback.store import correct_tags, search_comments
from tests.feedback_factories import add_comment


def history(session: Session, theme_id: str) -> list[tuple[str, str]]:
    rows = session.scalars(
        select(ThemeHistoryRow)
        .where(ThemeHistoryRow.theme_id == theme_id)
        .order_by(ThemeHistoryRow.id)
    ).all()
    return [(row.action, row.actor) for row in rows]


def test_adding_a_theme_bumps_the_codebook_version_and_is_recorded(db_session: Session) -> None:
    before = codebook_version(db_session)
    theme = add_theme(
        db_session,
        theme_id="onboarding",
        name="Onboarding",
        description="Getting started with the assistant.",
        examples=["the setup guide was clear", "  "],
        polarity_leaning="positive",
        actor="ana",
    )
    assert theme.examples == ("the setup guide was clear",)
    assert codebook_version(db_session) > before
    assert "onboarding" in {t.id for t in list_themes(db_session)}
    assert history(db_session, "onboarding") == [("add", "ana")]


@pytest.mark.parametrize(
    ("theme_id", "name", "field"),
    [
        ("Bad Id", "Fine name", "theme_id"),
        ("latency", "Another latency", "theme_id"),
        ("fresh_theme", "latency / SLOW", "name"),
        ("fresh_theme", " ", "name"),
    ],
)
def test_bad_new_themes_are_refused_naming_the_field(
    db_session: Session, theme_id: str, name: str, field: str
) -> None:
    if field == "name" and name.strip():
        rename_theme(db_session, theme_id="latency", name="Latency / slow", actor="ana")
    with pytest.raises(FeedbackInputError) as caught:
        add_theme(db_session, theme_id=theme_id, name=name, description="d", actor="ana")
    assert caught.value.field == field


def test_rename_and_edit_keep_the_id_and_record_before_and_after(db_session: Session) -> None:
    rename_theme(db_session, theme_id="latency", name="Slowness", actor="ana")
    edit_theme(db_session, theme_id="latency", actor="ben", examples=["takes ages"])
    (theme,) = [t for t in list_themes(db_session) if t.id == "latency"]
    assert (theme.name, theme.examples) == ("Slowness", ("takes ages",))
    rows = db_session.scalars(
        select(ThemeHistoryRow)
        .where(ThemeHistoryRow.theme_id == "latency", ThemeHistoryRow.actor.in_(["ana", "ben"]))
        .order_by(ThemeHistoryRow.id)
    ).all()
    assert [(r.action, r.before and r.before["name"], r.after["name"]) for r in rows] == [
        ("rename", "Latency / slow", "Slowness"),
        ("edit", "Slowness", "Slowness"),
    ]


def test_merging_moves_tags_and_examples_and_retires_the_source(db_session: Session) -> None:
    both = add_comment(db_session, "slow and jarring")
    one = add_comment(db_session, "popups everywhere")
    correct_tags(
        db_session,
        feedback_id=both,
        theme_ids=["latency", "disruptive"],
        polarity="negative",
        corrected_by="ana",
    )
    correct_tags(
        db_session,
        feedback_id=one,
        theme_ids=["disruptive"],
        polarity="negative",
        corrected_by="ana",
    )
    merged = merge_themes(db_session, source_id="disruptive", target_id="latency", actor="ana")
    assert "suggestions pop up on every keystroke" in merged.examples
    assert "disruptive" not in {t.id for t in list_themes(db_session)}
    assert merged_into_map(db_session) == {"disruptive": "latency"}
    tags = {c.feedback_id: [t.theme_id for t in c.tags] for c in search_comments(db_session)}
    assert tags == {both: ["latency"], one: ["latency"]}
    assert history(db_session, "disruptive")[-1] == ("merge", "ana")
    with pytest.raises(UnknownThemeError, match="merged into 'latency'"):
        rename_theme(db_session, theme_id="disruptive", name="x", actor="ana")
    with pytest.raises(FeedbackInputError, match="source_id"):
        merge_themes(db_session, source_id="other", target_id="latency", actor="ana")
    # Chains resolve to the last survivor.
    merge_themes(db_session, source_id="latency", target_id="speed", actor="ana")
    assert merged_into_map(db_session) == {"disruptive": "speed", "latency": "speed"}
