"""The dashboard's read/write API: searching comments, counting themes, correcting tags."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from feedback.codebook import codebook_version
from feedback.errors import FeedbackInputError, UnknownFeedbackError, UnknownThemeError
from feedback.models import CorrectionRow, TaggingRow, TagRow
from feedback.store import correct_tags, list_themes, search_comments, theme_counts
from tests.feedback_factories import BASE_TIME, add_comment, add_exposure

SEEDED = {
    "api_discovery",
    "boilerplate",
    "speed",
    "documentation",
    "accurate_suggestions",
    "wrong_suggestions",
    "disruptive",
    "latency",
    "suggestion_length",
    "test_generation",
    "trust_privacy",
    "feature_request",
    "other",
}


def test_the_migration_seeds_the_design_codebook_with_other_last(db_session: Session) -> None:
    themes = list_themes(db_session)
    assert {t.id for t in themes} == SEEDED
    assert themes[-1].id == "other"
    assert all(t.examples and t.active for t in themes)


def test_untagged_comments_are_listed_and_rating_only_feedback_is_not(db_session: Session) -> None:
    comment = add_comment(db_session, "Suggestions are slow to show up")
    add_comment(db_session, None, rating=4)
    found = search_comments(db_session)
    assert [c.feedback_id for c in found] == [comment]
    assert found[0].tags == () and found[0].polarity is None and not found[0].tagged
    assert search_comments(db_session, tagged=True) == []


def test_a_correction_becomes_the_comments_authoritative_tags(db_session: Session) -> None:
    comment = add_comment(db_session, "It keeps inventing methods that do not exist", rating=1)
    correct_tags(
        db_session,
        feedback_id=comment,
        theme_ids=["wrong_suggestions", "accurate_suggestions"],
        polarity="negative",
        corrected_by="ana",
    )
    correct_tags(
        db_session,
        feedback_id=comment,
        theme_ids=["wrong_suggestions"],
        polarity="negative",
        corrected_by="ben",
    )
    (view,) = search_comments(db_session, theme_ids=["wrong_suggestions"])
    assert view.source == "human" and view.polarity == "negative" and not view.needs_review
    assert [(t.theme_id, t.confidence, t.source) for t in view.tags] == [
        ("wrong_suggestions", 1.0, "human")
    ]
    assert view.tags[0].theme_name == "Wrong suggestions / hallucination"
    corrections = db_session.scalar(select(func.count()).where(CorrectionRow.event_id == comment))
    assert corrections == 2
    assert search_comments(db_session, theme_ids=["accurate_suggestions"]) == []
    assert search_comments(db_session, polarity="positive") == []


@pytest.mark.parametrize(
    ("theme_ids", "polarity", "error"),
    [
        ([], "negative", FeedbackInputError),
        (["no_such_theme"], "negative", UnknownThemeError),
        (["latency"], "mixed", FeedbackInputError),
    ],
)
def test_bad_corrections_are_refused_naming_the_field(
    db_session: Session, theme_ids: list[str], polarity: str, error: type[Exception]
) -> None:
    comment = add_comment(db_session, "slow")
    with pytest.raises(error, match="theme_ids|polarity"):
        correct_tags(
            db_session,
            feedback_id=comment,
            theme_ids=theme_ids,
            polarity=polarity,
            corrected_by="ana",
        )


def test_correcting_an_unknown_comment_is_refused(db_session: Session) -> None:
    with pytest.raises(UnknownFeedbackError, match="feedback_id"):
        correct_tags(
            db_session,
            feedback_id=uuid.uuid4(),
            theme_ids=["latency"],
            polarity="negative",
            corrected_by="ana",
        )


def test_search_filters_on_text_language_time_and_arm(db_session: Session) -> None:
    add_exposure(db_session, user_id="u-a", arm="control", at=BASE_TIME)
    add_exposure(db_session, user_id="u-b", arm="treatment", at=BASE_TIME)
    before = add_comment(db_session, "100% slow", user_id="u-a", at=BASE_TIME - dt.timedelta(1))
    control = add_comment(db_session, "Slow today", user_id="u-a", at=BASE_TIME)
    treated = add_comment(
        db_session, "fast and slow_ish", user_id="u-b", language="go", at=BASE_TIME
    )
    assert {c.feedback_id for c in search_comments(db_session, text="SLOW")} == {
        before,
        control,
        treated,
    }
    assert [c.feedback_id for c in search_comments(db_session, text="100%")] == [before]
    assert [c.feedback_id for c in search_comments(db_session, text="w_i")] == [treated]
    assert [c.feedback_id for c in search_comments(db_session, language="go")] == [treated]
    in_window = search_comments(db_session, start=BASE_TIME, end=BASE_TIME + dt.timedelta(1))
    assert {c.feedback_id for c in in_window} == {control, treated}
    # Comments written before the user's first exposure belong to no arm.
    by_arm = search_comments(db_session, experiment_key="ctx-window")
    assert {(c.feedback_id, c.arm) for c in by_arm} == {
        (control, "control"),
        (treated, "treatment"),
    }
    assert [
        c.feedback_id
        for c in search_comments(db_session, experiment_key="ctx-window", arm="treatment")
    ] == [treated]
    with pytest.raises(FeedbackInputError, match="arm"):
        search_comments(db_session, arm="treatment")
    with pytest.raises(FeedbackInputError, match="start"):
        search_comments(db_session, start=dt.datetime(2026, 11, 1))  # noqa: DTZ001
    with pytest.raises(FeedbackInputError, match="limit"):
        search_comments(db_session, limit=0)


def test_theme_counts_by_arm_language_and_day(db_session: Session) -> None:
    add_exposure(db_session, user_id="u-a", arm="control", at=BASE_TIME)
    add_exposure(db_session, user_id="u-b", arm="treatment", at=BASE_TIME)
    a1 = add_comment(db_session, "too slow", user_id="u-a", at=BASE_TIME)
    a2 = add_comment(db_session, "slow and wrong", user_id="u-a", at=BASE_TIME + dt.timedelta(1))
    b1 = add_comment(db_session, "so fast", user_id="u-b", language="go", at=BASE_TIME)
    add_comment(db_session, "not tagged yet", user_id="u-b", language="go", at=BASE_TIME)
    b2 = add_comment(db_session, "could it wait a bit?", user_id="u-b", at=BASE_TIME)
    for comment, themes, polarity in (
        (a1, ["latency"], "negative"),
        (a2, ["latency", "wrong_suggestions"], "negative"),
        (b1, ["speed"], "positive"),
        (b2, ["feature_request"], "neutral"),
    ):
        correct_tags(
            db_session, feedback_id=comment, theme_ids=themes, polarity=polarity, corrected_by="ana"
        )
    counts = theme_counts(db_session, experiment_key="ctx-window")
    arms = {g.group: g for g in counts.by("arm")}
    assert (arms["control"].comments, arms["control"].tagged, arms["control"].negative) == (2, 2, 2)
    assert arms["control"].themes == {"latency": 2, "wrong_suggestions": 1}
    assert arms["treatment"].comments == 3
    assert arms["treatment"].themes == {"speed": 1, "feature_request": 1}
    # A request is neither praise nor complaint: it counts as neutral, in neither share.
    assert (arms["treatment"].positive, arms["treatment"].neutral) == (1, 1)
    assert arms["treatment"].positive_share == 0.5
    assert arms["treatment"].negative_share == 0.0
    languages = {g.group: g for g in counts.by("language")}
    assert languages["go"].comments == 2 and languages["go"].tagged == 1
    assert [g.group for g in counts.by("day")] == ["2026-11-10", "2026-11-11"]
    go_only = theme_counts(db_session, language="go", end=BASE_TIME + dt.timedelta(hours=1))
    assert go_only.by("arm") == [] and [g.group for g in go_only.by("language")] == ["go"]


def test_review_filters_pick_the_comments_the_tagger_was_unsure_of(db_session: Session) -> None:
    sure = add_comment(db_session, "suggestions take ages")
    unsure = add_comment(db_session, "hmm, interesting")
    polarity_unsure = add_comment(db_session, "it writes tests")
    untagged = add_comment(db_session, "not tagged yet")
    tagging = {
        sure: (0.95, 0.9, False),
        unsure: (0.3, 0.8, True),
        polarity_unsure: (0.9, 0.55, True),
    }
    theme = {sure: "latency", unsure: "other", polarity_unsure: "test_generation"}
    for comment, (theme_confidence, polarity_confidence, review) in tagging.items():
        db_session.add(
            TaggingRow(
                event_id=comment,
                polarity="neutral",
                polarity_confidence=polarity_confidence,
                source="model",
                codebook_version=codebook_version(db_session),
                needs_review=review,
            )
        )
        db_session.flush()
        db_session.add(
            TagRow(
                event_id=comment,
                theme_id=theme[comment],
                confidence=theme_confidence,
                source="model",
                needs_review=review,
            )
        )
    db_session.flush()

    def ids(**filters: object) -> set[uuid.UUID]:
        return {c.feedback_id for c in search_comments(db_session, **filters)}  # type: ignore[arg-type]

    assert ids(needs_review=True) == {unsure, polarity_unsure}
    assert ids(needs_review=False) == {sure}
    # Confidence is the lower of the top theme's and the polarity's; untagged ones have none.
    assert ids(max_confidence=0.6) == {unsure, polarity_unsure}
    assert ids(max_confidence=0.4) == {unsure}
    assert ids(max_confidence=1.0) == {sure, unsure, polarity_unsure}
    assert untagged in ids()
    views = {c.feedback_id: c for c in search_comments(db_session)}
    assert views[polarity_unsure].confidence == 0.55 and views[untagged].confidence is None
    assert ids(polarity="neutral") == {sure, unsure, polarity_unsure}
    with pytest.raises(FeedbackInputError, match="max_confidence"):
        search_comments(db_session, max_confidence=1.5)
