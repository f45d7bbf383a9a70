"""Propose new themes from comments tagged "other": clusters of their embeddings.

Average-linkage clustering on cosine distance with a fixed threshold, so the number of
clusters follows the data; each cluster of at least ``min_size`` comments becomes a proposal
with its most central comments and the words that set it apart (TF-IDF against the rest).
People accept a proposal as a new theme; nothing is added on its own.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Sequence

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from collector.models import FeedbackRow
from feedback.codebook import OTHER_THEME, add_theme
from feedback.embedder import Embedder, Vectors, get_embedder
from feedback.models import TagRow
from feedback.views import ThemeView

# Clusters merge while their average cosine distance stays below this (similarity > 0.25):
# paraphrases of one topic score 0.35-0.55 with MiniLM, unrelated comments 0.0-0.15.
DISTANCE_THRESHOLD = 0.75
DEFAULT_MIN_SIZE = 3
DEFAULT_MAX_THEMES = 5
KEY_TERMS = 5
REPRESENTATIVES = 3
MAX_COMMENTS = 5000


@dataclasses.dataclass(frozen=True, slots=True)
class ThemeProposal:
    """A candidate theme: a cluster of "other" comments."""

    suggested_id: str
    suggested_name: str
    key_terms: tuple[str, ...]
    representatives: tuple[str, ...]
    feedback_ids: tuple[uuid.UUID, ...]
    # Mean cosine similarity of the members to their centroid (1 = identical comments).
    cohesion: float

    @property
    def size(self) -> int:
        """How many comments the cluster holds."""
        return len(self.feedback_ids)


def _key_terms(texts: Sequence[str], members: np.ndarray) -> list[str]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(stop_words="english", token_pattern=r"(?u)\b[a-zA-Z]{3,}\b")
    try:
        weights = vectorizer.fit_transform(texts)
    except ValueError:  # only stop words: nothing to name the cluster by
        return []
    inside = np.asarray(weights[members].mean(axis=0)).ravel()
    rest = ~members
    outside = np.asarray(weights[rest].mean(axis=0)).ravel() if rest.any() else 0.0
    terms = vectorizer.get_feature_names_out()
    order = np.argsort(-(inside - outside), kind="stable")
    return [str(terms[i]) for i in order[:KEY_TERMS] if inside[i] > 0]


def propose_themes(
    feedback_ids: Sequence[uuid.UUID],
    texts: Sequence[str],
    vectors: Vectors,
    *,
    min_size: int = DEFAULT_MIN_SIZE,
    max_themes: int = DEFAULT_MAX_THEMES,
) -> list[ThemeProposal]:
    """Clusters of at least ``min_size`` comments, largest first."""
    if len(texts) < max(min_size, 2):
        return []
    # Imported here so that ``codelift`` starts without scikit-learn.
    from sklearn.cluster import AgglomerativeClustering

    labels = AgglomerativeClustering(
        n_clusters=None,
        metric="cosine",
        linkage="average",
        distance_threshold=DISTANCE_THRESHOLD,
    ).fit_predict(vectors)
    proposals = []
    for label in np.unique(labels):
        members = labels == label
        if members.sum() < min_size:
            continue
        centroid = vectors[members].mean(axis=0)
        centroid /= np.linalg.norm(centroid) or 1.0
        closeness = vectors[members] @ centroid
        index = np.flatnonzero(members)
        central = index[np.argsort(-closeness, kind="stable")[:REPRESENTATIVES]]
        terms = _key_terms(texts, members)
        slug = "_".join(re.sub(r"[^a-z0-9]", "", t.lower()) for t in terms[:2]) or "new_theme"
        proposals.append(
            ThemeProposal(
                suggested_id=slug if slug[0].isalpha() else f"theme_{slug}",
                suggested_name=" / ".join(terms[:2]).capitalize() or "New theme",
                key_terms=tuple(terms),
                representatives=tuple(texts[int(i)] for i in central),
                feedback_ids=tuple(feedback_ids[int(i)] for i in index),
                cohesion=float(closeness.mean()),
            )
        )
    proposals.sort(key=lambda p: (-p.size, -p.cohesion))
    return proposals[:max_themes]


def other_comments(session: Session, *, limit: int = MAX_COMMENTS) -> list[tuple[uuid.UUID, str]]:
    """Comments whose only theme is "other", newest first."""
    rows = session.execute(
        select(FeedbackRow.event_id, FeedbackRow.text)
        .join(TagRow, TagRow.event_id == FeedbackRow.event_id)
        .where(TagRow.theme_id == OTHER_THEME, FeedbackRow.text.is_not(None))
        .order_by(FeedbackRow.client_ts.desc())
        .limit(limit)
    ).all()
    return [(row.event_id, row.text) for row in rows]


def discover(
    session: Session,
    *,
    min_size: int = DEFAULT_MIN_SIZE,
    max_themes: int = DEFAULT_MAX_THEMES,
    embedder: Embedder | None = None,
) -> list[ThemeProposal]:
    """Proposed themes from the comments tagged "other"."""
    found = other_comments(session)
    ids = [event_id for event_id, _ in found]
    texts = [text for _, text in found]
    vectors = (embedder or get_embedder()).encode(texts)
    return propose_themes(ids, texts, vectors, min_size=min_size, max_themes=max_themes)


def accept_proposal(
    session: Session,
    proposal: ThemeProposal,
    *,
    actor: str,
    theme_id: str | None = None,
    name: str | None = None,
    description: str | None = None,
) -> ThemeView:
    """Add a proposal to the codebook, its central comments as example phrases."""
    return add_theme(
        session,
        theme_id=theme_id or proposal.suggested_id,
        name=name or proposal.suggested_name,
        description=description or f"Comments about {', '.join(proposal.key_terms)}.",
        examples=proposal.representatives,
        actor=actor,
    )
