"""Tagging off the ingest path: train tagger versions and tag what is pending.

A comment is pending when it has no tagging, or a model tagging made by an older tagger or
under an older codebook. People's corrections are never pending and never overwritten: the
write only replaces rows whose source is still 'model', so a correction made while a batch
was being tagged wins.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence

from sqlalchemy import delete, func, or_, select
from sqlalchemy.dialects.postgresql import distinct_on, insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from collector.models import FeedbackRow
from core.db.session import session_for
from feedback.codebook import codebook_version, list_themes, merged_into_map
from feedback.dataset import Example, load_labelled, resolve_themes
from feedback.evaluation import Embedded, learned_figures, with_splits
from feedback.features import CommentInput
from feedback.model import TaggerModel
from feedback.models import CorrectionRow, TaggerRow, TaggingRow, TagRow
from feedback.options import DEFAULT_RETRAIN_AFTER, RETRAIN_FOLDS
from feedback.tagger import Tagger, Tagging

log = logging.getLogger(__name__)

BATCH_SIZE = 256


@dataclasses.dataclass(frozen=True, slots=True)
class TagRunResult:
    """What one tagging run did."""

    tagged: int
    tagger_id: int
    retrained: bool


def latest_tagger(session: Session) -> TaggerRow | None:
    """The newest tagger version."""
    return session.scalars(select(TaggerRow).order_by(TaggerRow.id.desc()).limit(1)).first()


def correction_count(session: Session) -> int:
    """Comments people have corrected (each counted once, whatever the number of edits)."""
    return session.scalar(select(func.count(func.distinct(CorrectionRow.event_id)))) or 0


def corrected_examples(session: Session) -> list[Example]:
    """Each corrected comment with its latest correction, as a training example."""
    latest = (
        select(CorrectionRow)
        .ext(distinct_on(CorrectionRow.event_id))
        .order_by(CorrectionRow.event_id, CorrectionRow.id.desc())
        .subquery()
    )
    rows = session.execute(
        select(latest.c.theme_ids, latest.c.polarity, FeedbackRow)
        .join(FeedbackRow, FeedbackRow.event_id == latest.c.event_id)
        .where(FeedbackRow.text.is_not(None))
    ).all()
    return [
        Example(
            comment=CommentInput(
                text=row.FeedbackRow.text,
                rating=row.FeedbackRow.rating,
                rating_scale=row.FeedbackRow.rating_scale,
            ),
            theme_ids=tuple(row.theme_ids),
            polarity=row.polarity,
            language=row.FeedbackRow.language,
        )
        for row in rows
    ]


def retrain(
    session: Session,
    *,
    labelled: Sequence[Example] | None = None,
    folds: int = RETRAIN_FOLDS,
    tagger: Tagger | None = None,
) -> TaggerRow:
    """Train a new tagger version on the labelled set plus corrections; record its figures.

    The version trains on everything; its figures (on the untouched split and under group
    k-fold, with per-theme scores and confusions) come from models trained without the comments
    scored. ``labelled`` defaults to the shipped labelled set. Flushes; the caller commits.
    """
    themes = list_themes(session)
    base = Tagger(themes) if tagger is None else tagger.with_model(None)
    if base.theme_ids != tuple(t.id for t in themes):
        base = Tagger(themes, embedder=base.embedder)
    merges = merged_into_map(session)
    corrections = corrected_examples(session)
    examples = resolve_themes(
        [*with_splits(load_labelled() if labelled is None else labelled), *corrections],
        merges,
        base.theme_ids,
    )
    data = Embedded.of(base, examples)
    metrics: dict[str, object] = {
        report.protocol: report.to_json() for report in learned_figures(base, data, folds=folds)
    }
    model = data.fit(base, range(len(examples)))
    row = TaggerRow(
        codebook_version=codebook_version(session),
        embedder_sha256=base.embedder.sha256,
        n_examples=len(examples),
        n_corrections=len(corrections),
        metrics=metrics,
        weights=model.to_bytes(),
    )
    session.add(row)
    session.flush()
    log.info("trained tagger %s on %d examples: %s", row.id, len(examples), metrics)
    return row


def needs_retraining(session: Session, row: TaggerRow | None, retrain_after: int) -> bool:
    """Whether there is no tagger, the codebook changed, or enough corrections arrived."""
    if row is None or row.codebook_version != codebook_version(session):
        return True
    return correction_count(session) - row.n_corrections >= retrain_after


def current_tagger(
    session: Session,
    *,
    retrain_after: int = DEFAULT_RETRAIN_AFTER,
    labelled: Sequence[Example] | None = None,
    folds: int = RETRAIN_FOLDS,
) -> tuple[Tagger, TaggerRow, bool]:
    """The tagger to tag with, trained first when needed; also says whether it retrained."""
    row = latest_tagger(session)
    retrained = needs_retraining(session, row, retrain_after)
    if retrained:
        row = retrain(session, labelled=labelled, folds=folds)
        session.commit()
    assert row is not None
    tagger = Tagger(list_themes(session), TaggerModel.from_bytes(row.weights))
    return tagger, row, retrained


def _pending(session: Session, tagger_id: int, version: int, limit: int) -> list[FeedbackRow]:
    stmt = (
        select(FeedbackRow)
        .outerjoin(TaggingRow, TaggingRow.event_id == FeedbackRow.event_id)
        .where(
            FeedbackRow.text.is_not(None),
            or_(
                TaggingRow.event_id.is_(None),
                (TaggingRow.source == "model")
                & (
                    TaggingRow.tagger_id.is_distinct_from(tagger_id)
                    | (TaggingRow.codebook_version != version)
                ),
            ),
        )
        .order_by(FeedbackRow.client_ts, FeedbackRow.event_id)
        .limit(limit)
    )
    return list(session.scalars(stmt).all())


def write_taggings(
    session: Session,
    rows: Sequence[FeedbackRow],
    taggings: Sequence[Tagging],
    *,
    tagger_id: int,
    version: int,
) -> int:
    """Store model taggings, skipping comments a person has corrected; returns how many."""
    if not rows:
        return 0
    values = [
        {
            "event_id": row.event_id,
            "polarity": tagging.polarity,
            "polarity_confidence": tagging.polarity_confidence,
            "source": "model",
            "tagger_id": tagger_id,
            "codebook_version": version,
            "needs_review": tagging.needs_review,
            "tagged_at": func.now(),
        }
        for row, tagging in zip(rows, taggings, strict=True)
    ]
    upsert = insert(TaggingRow).values(values)
    written = set(
        session.scalars(
            upsert.on_conflict_do_update(
                index_elements=[TaggingRow.event_id],
                set_={k: upsert.excluded[k] for k in values[0] if k != "event_id"},
                where=TaggingRow.source == "model",
            ).returning(TaggingRow.event_id)
        ).all()
    )
    if not written:
        return 0
    session.execute(delete(TagRow).where(TagRow.event_id.in_(written)))
    tags = [
        {
            "event_id": row.event_id,
            "theme_id": score.theme_id,
            "confidence": min(max(score.confidence, 0.0), 1.0),
            "source": "model",
            "needs_review": score.needs_review,
        }
        for row, tagging in zip(rows, taggings, strict=True)
        if row.event_id in written
        for score in tagging.themes
    ]
    session.execute(insert(TagRow), tags)
    return len(written)


def tag_pending(
    session: Session,
    *,
    retrain_after: int = DEFAULT_RETRAIN_AFTER,
    batch_size: int = BATCH_SIZE,
    tagger: Tagger | None = None,
    labelled: Sequence[Example] | None = None,
    folds: int = RETRAIN_FOLDS,
) -> TagRunResult:
    """Tag every pending comment, retraining first when needed; commits after each batch.

    A ``tagger`` given must carry the latest tagger version's model (tests reuse one);
    ``labelled`` and ``folds`` are passed to ``retrain``.
    """
    if tagger is None:
        tagger, row, retrained = current_tagger(
            session, retrain_after=retrain_after, labelled=labelled, folds=folds
        )
    else:
        found = latest_tagger(session)
        if found is None:
            raise ValueError("no tagger version is recorded: retrain first")
        row, retrained = found, False
    version = codebook_version(session)
    total = 0
    while batch := _pending(session, row.id, version, batch_size):
        started = time.perf_counter()
        taggings = tagger.tag([CommentInput(r.text or "", r.rating, r.rating_scale) for r in batch])
        total += write_taggings(session, batch, taggings, tagger_id=row.id, version=version)
        session.commit()
        log.info("tagged %d comments in %.2f s", len(batch), time.perf_counter() - started)
        if len(batch) < batch_size:
            break
    return TagRunResult(tagged=total, tagger_id=row.id, retrained=retrained)


def tag_all_pending(
    database_url: str, *, retrain_after: int = DEFAULT_RETRAIN_AFTER
) -> TagRunResult:
    """Tag every pending comment of the database at ``database_url`` (the demo's entry point)."""
    with session_for(database_url) as session:
        return tag_pending(session, retrain_after=retrain_after)


def tag_periodically(
    database_url: str,
    *,
    interval_s: float,
    retrain_after: int = DEFAULT_RETRAIN_AFTER,
    runs: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    report: Callable[[TagRunResult], None] | None = None,
) -> list[TagRunResult | None]:
    """Tag pending comments every ``interval_s`` seconds, ``runs`` times (None: for ever).

    A run that cannot reach the database is logged (None in the list returned) and tried again
    after a back-off that doubles from 1 s up to ``interval_s``: the worker outlives a database
    restart instead of exiting, and tags what arrived meanwhile on its next run.
    """
    outcomes: list[TagRunResult | None] = []
    failures = 0
    while runs is None or len(outcomes) < runs:
        try:
            result = tag_all_pending(database_url, retrain_after=retrain_after)
        except OperationalError as exc:
            failures += 1
            wait = min(interval_s, 2.0 ** (failures - 1))
            log.warning("tagging run failed (%s); next try in %.0f s", exc.orig or exc, wait)
            outcomes.append(None)
        else:
            failures = 0
            wait = interval_s
            outcomes.append(result)
            if report is not None:
                report(result)
        if runs is None or len(outcomes) < runs:
            sleep(wait)
    return outcomes
