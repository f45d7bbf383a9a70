"""The tagger: codebook-only and learned tagging, retraining, the worker, evaluation figures.

The sentence model loads once for the session (``codebook_tagger``); trained models use a small
fixed slice of the labelled set so the whole module stays fast.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from feedback.codebook import add_theme, codebook_version, list_themes
from feedback.dataset import Example, load_labelled, load_real, phrase_examples
from feedback.discovery import accept_proposal, discover
from feedback.embedder import EmbedderIntegrityError, load_embedder, model_dir
from feedback.evaluation import (
    Embedded,
    codebook_only,
    evaluate_labelled,
    fit,
    group_cross_validated,
    score,
)
from feedback.features import CommentInput
from feedback.model import TaggerModel
from feedback.models import TaggerRow
from feedback.store import correct_tags, search_comments
from feedback.tagger import Tagger, Tagging, ThemeScore
from feedback.views import ThemeView
from feedback.worker import latest_tagger, needs_retraining, retrain, tag_pending
from tests.feedback_factories import add_comment

PER_THEME = 3


@pytest.fixture(scope="session")
def codebook(engine: Engine) -> list[ThemeView]:
    with Session(engine) as session:
        return list_themes(session)


@pytest.fixture(scope="session")
def codebook_tagger(codebook: list[ThemeView]) -> Tagger:
    """The codebook-only tagger; building it loads the sentence model (once per session)."""
    return Tagger(codebook)


@pytest.fixture(scope="session")
def small_labelled() -> list[Example]:
    """The first three labelled comments of each theme (by first theme): 39 comments."""
    taken: dict[str, int] = {}
    out = []
    for example in load_labelled():
        first = example.theme_ids[0]
        if taken.get(first, 0) < PER_THEME:
            taken[first] = taken.get(first, 0) + 1
            out.append(example)
    return out


@pytest.fixture(scope="session")
def real_sample() -> list[Example]:
    """Ten real training comments per primary theme, each its own source (about 120)."""
    taken: dict[str, int] = {}
    out = []
    for example in load_real():
        if example.split == "train" and taken.get(example.primary, 0) < 10:
            taken[example.primary] = taken.get(example.primary, 0) + 1
            out.append(example)
    return out


@pytest.fixture(scope="session")
def small_model(codebook_tagger: Tagger, small_labelled: list[Example]) -> TaggerModel:
    phrases = phrase_examples(codebook_tagger.themes)
    return fit(
        codebook_tagger,
        small_labelled,
        codebook_tagger.embed([e.comment for e in small_labelled]),
        phrases,
        codebook_tagger.embed([e.comment for e in phrases]),
    )


def test_weights_with_another_hash_are_refused() -> None:
    with pytest.raises(EmbedderIntegrityError, match="SHA-256"):
        load_embedder(model_dir(), expected_sha256="0" * 64)


@pytest.mark.parametrize(
    ("text", "rating", "theme", "polarity"),
    [
        ("Suggestions take forever to appear, it is so laggy", 1, "latency", "negative"),
        ("It writes my unit tests and test fixtures for me", 5, "test_generation", "positive"),
        # A question is neither praise nor complaint.
        ("Is my source code sent to an external server?", None, "trust_privacy", "neutral"),
    ],
)
def test_the_codebook_alone_tags_clear_comments(
    codebook_tagger: Tagger, text: str, rating: int | None, theme: str, polarity: str
) -> None:
    (tagging,) = codebook_tagger.tag([CommentInput(text, rating)])
    assert tagging.top_theme == theme
    assert tagging.polarity == polarity
    confidences = [s.confidence for s in tagging.themes]
    assert confidences == sorted(confidences, reverse=True)
    assert all(0.0 <= c <= 1.0 for c in confidences)


def test_a_trained_model_survives_storage_and_tags_the_same(
    codebook_tagger: Tagger, small_model: TaggerModel
) -> None:
    comments = [CommentInput("the popups are distracting", 2), CommentInput("great docstrings")]
    vectors = codebook_tagger.embed(comments)
    tagger = codebook_tagger.with_model(small_model)
    restored = codebook_tagger.with_model(TaggerModel.from_bytes(small_model.to_bytes()))
    before, after = tagger.predict(comments, vectors), restored.predict(comments, vectors)
    for field in ("themes", "primary", "polarity"):
        # Coefficients are stored as float32: probabilities agree to ~1e-6.
        np.testing.assert_allclose(getattr(before, field), getattr(after, field), atol=1e-5)
    assert [t.top_theme for t in restored.tag_embedded(comments, vectors)] == [
        "disruptive",
        "documentation",
    ]


def test_other_never_sits_beside_a_real_theme(codebook_tagger: Tagger) -> None:
    for tagging in codebook_tagger.tag([CommentInput("ok"), CommentInput("asdf qwerty")]):
        ids = [s.theme_id for s in tagging.themes]
        assert "other" not in ids or ids == ["other"]


def test_the_worker_tags_pending_comments_and_keeps_corrections(
    db_session: Session, codebook_tagger: Tagger, small_labelled: list[Example]
) -> None:
    slow = add_comment(db_session, "completions are laggy and time out", rating=1)
    tests = add_comment(db_session, "it wrote all my unit tests", rating=5)
    corrected = add_comment(db_session, "meh, it writes docs I guess", rating=3)
    correct_tags(
        db_session,
        feedback_id=corrected,
        theme_ids=["documentation"],
        polarity="negative",
        corrected_by="ana",
    )
    assert {c.feedback_id for c in search_comments(db_session, tagged=False)} == {slow, tests}
    row = retrain(db_session, labelled=small_labelled, folds=3, tagger=codebook_tagger)
    assert row.n_corrections >= 1 and row.n_examples == len(small_labelled) + row.n_corrections
    figures = row.metrics["group k-fold"]
    assert isinstance(figures, dict) and figures["folds"] == 3
    assert set(figures) >= {"top1_accuracy", "primary_accuracy", "polarity_accuracy", "macro_f1"}
    assert set(figures) >= {"per_theme", "theme_confusion", "polarity_confusion"}
    tagger = codebook_tagger.with_model(TaggerModel.from_bytes(row.weights))

    result = tag_pending(db_session, tagger=tagger)
    assert (result.tagged, result.tagger_id, result.retrained) == (2, row.id, False)
    views = {c.feedback_id: c for c in search_comments(db_session)}
    assert views[slow].tags[0].theme_id == "latency" and views[slow].polarity == "negative"
    assert views[tests].tags[0].theme_id == "test_generation"
    assert all(t.source == "model" for t in views[slow].tags)
    assert views[corrected].source == "human"
    assert [t.theme_id for t in views[corrected].tags] == ["documentation"]
    assert tag_pending(db_session, tagger=tagger).tagged == 0

    # A codebook edit makes every model tagging stale, and calls for a new tagger version.
    add_theme(db_session, theme_id="pricing", name="Pricing", description="Cost.", actor="ana")
    assert needs_retraining(db_session, row, retrain_after=100)
    version = codebook_version(db_session)
    result = tag_pending(db_session, labelled=small_labelled, folds=3)
    assert result.retrained and result.tagged == 2
    assert views[corrected] == {c.feedback_id: c for c in search_comments(db_session)}[corrected]
    stored = db_session.scalars(
        select(TaggerRow).where(TaggerRow.id >= row.id).order_by(TaggerRow.id)
    ).all()
    assert [r.codebook_version for r in stored] == [row.codebook_version, version]


def test_enough_new_corrections_trigger_a_retrain(
    db_session: Session, codebook_tagger: Tagger, small_labelled: list[Example]
) -> None:
    first = retrain(db_session, labelled=small_labelled, folds=3, tagger=codebook_tagger)
    for text in ("way too eager with popups", "suggestions pop up constantly"):
        comment = add_comment(db_session, text, rating=2)
        assert not needs_retraining(db_session, first, retrain_after=2)
        correct_tags(
            db_session,
            feedback_id=comment,
            theme_ids=["disruptive"],
            polarity="negative",
            corrected_by="ana",
        )
    assert needs_retraining(db_session, first, retrain_after=2)
    result = tag_pending(db_session, retrain_after=2, labelled=small_labelled, folds=3)
    newest = latest_tagger(db_session)
    assert result.retrained and newest is not None and newest.id == result.tagger_id != first.id
    assert newest.n_corrections == first.n_corrections + 2


def _tagging(*themes: tuple[str, float], polarity: str = "positive") -> Tagging:
    scores = tuple(ThemeScore(t, c, c < 0.5) for t, c in themes)
    return Tagging(themes=scores, polarity=polarity, polarity_confidence=0.9, needs_review=False)


def _example(*themes: str, polarity: str = "positive", primary: str = "") -> Example:
    return Example(comment=CommentInput("x"), theme_ids=themes, polarity=polarity, primary=primary)


def test_scores_on_a_fixed_set() -> None:
    truth = [
        _example("speed"),
        _example("speed", "boilerplate", primary="boilerplate"),
        _example("latency", polarity="negative"),
        _example("boilerplate", polarity="neutral"),
    ]
    predicted = [
        _tagging(("speed", 0.9)),
        _tagging(("speed", 0.8), ("latency", 0.4)),
        _tagging(("latency", 0.7), polarity="negative"),
        _tagging(("speed", 0.6), polarity="negative"),
    ]
    themes = ["speed", "boilerplate", "latency", "other"]
    report = score("fixed", themes, truth, predicted)
    by_theme = {m.theme_id: m for m in report.per_theme}
    assert report.top1_accuracy == pytest.approx(0.75)
    # The second comment's top theme is one of its themes, but not its primary one.
    assert report.primary_accuracy == pytest.approx(0.5)
    assert report.polarity_accuracy == pytest.approx(0.75)
    assert report.signed_polarity_accuracy == pytest.approx(1.0)
    assert (by_theme["speed"].precision, by_theme["speed"].recall) == (2 / 3, 1.0)
    assert (by_theme["boilerplate"].precision, by_theme["boilerplate"].recall) == (0.0, 0.0)
    assert by_theme["latency"].f1 == pytest.approx(2 / 3)
    assert by_theme["other"].support == 0
    # Macro-F1 averages the themes that occur: (0.8 + 0 + 2/3) / 3.
    assert report.macro_f1 == pytest.approx((0.8 + 0 + 2 / 3) / 3)
    # Rows are the true primary theme, columns the predicted top theme.
    assert report.theme_confusion[1] == (2, 0, 0, 0)
    assert report.theme_confusion[0] == (1, 0, 0, 0)
    assert report.polarity_confusion == ((2, 0, 0), (0, 1, 0), (0, 1, 0))
    assert report.to_json()["theme_confusion"] == {
        "labels": themes,
        "counts": [[1, 0, 0, 0], [2, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]],
    }


def test_learning_beats_the_codebook_alone_and_folds_keep_sources_apart(
    codebook_tagger: Tagger, real_sample: list[Example]
) -> None:
    # Two comments per source: a fold that split a source would leak its twin.
    examples = [
        dataclasses.replace(e, source=f"thread-{i // 2}", split="train")
        for i, e in enumerate(real_sample)
    ]
    data = Embedded.of(codebook_tagger, examples)
    rows = data.indices("train")
    plain = codebook_only(codebook_tagger, examples, data.vectors)
    learned = group_cross_validated(codebook_tagger, data, rows, folds=3)
    assert learned.comments == plain.comments == len(examples)
    assert learned.folds == 3 and plain.folds is None
    assert learned.protocol == "group k-fold"
    assert learned.top1_accuracy > plain.top1_accuracy
    assert learned.polarity_accuracy > plain.polarity_accuracy
    from sklearn.model_selection import GroupKFold

    groups = [e.source for e in examples]
    for train, test in GroupKFold(n_splits=3).split(rows, groups=groups):
        assert not {groups[i] for i in train} & {groups[i] for i in test}
    with pytest.raises(ValueError, match="at least 3 sources"):
        group_cross_validated(codebook_tagger, data, rows[:4], folds=3)


def test_the_untouched_split_is_scored_by_a_model_that_never_saw_it(
    codebook_tagger: Tagger, small_labelled: list[Example]
) -> None:
    examples = [
        dataclasses.replace(e, source=f"thread-{i}", split="test" if i % 4 == 0 else "train")
        for i, e in enumerate(small_labelled)
    ]
    reports = evaluate_labelled(codebook_tagger, examples, folds=3)
    assert [(r.mode, r.protocol) for r in reports] == [
        ("codebook only", "untouched split"),
        ("with learning", "untouched split"),
        ("codebook only", "group k-fold"),
        ("with learning", "group k-fold"),
    ]
    tested = sum(e.split == "test" for e in examples)
    trained = len(examples) - tested
    assert [r.comments for r in reports] == [tested, tested, trained, trained]
    # The test comments, learned as training data, would be tagged (near) perfectly; held out
    # they are not: the figure comes from a model that did not see them.
    data = Embedded.of(codebook_tagger, examples)
    test = data.indices("test")
    seen = codebook_tagger.with_model(data.fit(codebook_tagger, range(len(examples))))
    memorised = score(
        "seen", codebook_tagger.theme_ids, [examples[i] for i in test], data.tag(seen, test)
    )
    assert memorised.primary_accuracy >= reports[1].primary_accuracy


def test_discovery_proposes_themes_from_other_comments(
    db_session: Session, codebook_tagger: Tagger
) -> None:
    texts = [
        "The plugin costs too much for our team",
        "Pricing is too high, we cannot afford the licence fee",
        "Too expensive per seat",
        "Installation failed behind the proxy",
        "Could not install the extension, setup error",
        "The installer crashed during setup",
        "I like turtles",
    ]
    ids = {}
    for text in texts:
        ids[text] = add_comment(db_session, text, rating=3)
        correct_tags(
            db_session,
            feedback_id=ids[text],
            theme_ids=["other"],
            polarity="negative",
            corrected_by="ana",
        )
    proposals = discover(db_session, min_size=3, embedder=codebook_tagger.embedder)
    assert sorted(sorted(p.feedback_ids) for p in proposals) == sorted(
        [sorted(ids[t] for t in texts[:3]), sorted(ids[t] for t in texts[3:6])]
    )
    install = next(p for p in proposals if ids[texts[3]] in p.feedback_ids)
    assert {"installation", "installer", "install", "setup"} & set(install.key_terms)
    theme = accept_proposal(
        db_session, install, actor="ana", theme_id="installation", name="Installation"
    )
    assert set(theme.examples) <= set(texts[3:6]) and len(theme.examples) == 3
    assert "installation" in {t.id for t in list_themes(db_session)}
