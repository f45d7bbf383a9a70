"""Tag comments with themes (multi-label, with confidences) and a polarity.

Without a trained model the tagger matches comments to the codebook's phrases (prototypes);
with one it averages the model's classifiers. Either way the top theme is always kept, other
themes join above ``TAG_THRESHOLD``, "other" never sits beside a real theme, and tags below
``REVIEW_THRESHOLD`` are flagged for a person to look at.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np

from feedback.codebook import OTHER_THEME
from feedback.embedder import Embedder, Vectors, get_embedder
from feedback.features import (
    CommentInput,
    Matrix,
    Prototypes,
    prototypes_for,
    rating_features,
    signed_rating,
    softmax,
)
from feedback.model import TaggerModel
from feedback.views import ThemeView

# A second theme is tagged when its probability reaches this: 0.3 gave the best macro-F1 of
# both modes together in 10-fold CV on the labelled set (0.25 to 0.5 tried).
TAG_THRESHOLD = 0.3
# Below this a theme tag, or the top theme of a comment, goes to review.
REVIEW_THRESHOLD = 0.5
# Below this a polarity goes to review.
POLARITY_REVIEW_THRESHOLD = 0.7
# Softmax temperature turning cosine similarities into theme probabilities (codebook only):
# cosines of related sentences differ by a few hundredths, so they need sharpening.
PROTOTYPE_TEMPERATURE = 0.05
# Confidence of a polarity read off an explicit rating, when there is no trained model.
RATING_POLARITY_CONFIDENCE = 0.9
POSITIVE_ANCHORS = ("this is great, helpful and I love it", "works well and saves me time")
NEGATIVE_ANCHORS = ("this is bad, annoying and broken", "it is wrong, slow and frustrating")


@functools.cache
def _anchors(embedder: Embedder) -> Vectors:
    return embedder.encode([*POSITIVE_ANCHORS, *NEGATIVE_ANCHORS])


class StaleModelError(RuntimeError):
    """The model was trained on another codebook: retrain before tagging."""


@dataclasses.dataclass(frozen=True, slots=True)
class ThemeScore:
    """One theme the tagger put on a comment."""

    theme_id: str
    confidence: float
    needs_review: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Tagging:
    """The tagger's verdict on one comment."""

    themes: tuple[ThemeScore, ...]
    polarity: str
    polarity_confidence: float
    needs_review: bool

    @property
    def top_theme(self) -> str:
        """The most likely theme."""
        return self.themes[0].theme_id


class Tagger:
    """Tags comments against a codebook, with a trained model or without one."""

    def __init__(
        self,
        themes: Sequence[ThemeView],
        model: TaggerModel | None = None,
        *,
        embedder: Embedder | None = None,
    ) -> None:
        active = tuple(theme for theme in themes if theme.active)
        self.theme_ids = tuple(theme.id for theme in active)
        if OTHER_THEME not in self.theme_ids:
            raise ValueError("the codebook needs the 'other' theme")
        if model is not None and model.theme_ids != self.theme_ids:
            raise StaleModelError(
                f"model knows themes {model.theme_ids}, codebook has {self.theme_ids}"
            )
        self.themes = active
        self.model = model
        self._embedder = embedder or get_embedder()
        self.prototypes: Prototypes = prototypes_for(active, self._embedder)
        self._anchors = _anchors(self._embedder)

    def with_model(self, model: TaggerModel | None) -> Tagger:
        """The same codebook with another model (or none)."""
        return Tagger(self.themes, model, embedder=self._embedder)

    @property
    def embedder(self) -> Embedder:
        """The sentence embedder in use."""
        return self._embedder

    def embed(self, comments: Sequence[CommentInput]) -> Vectors:
        """The comments' sentence embeddings (the expensive step)."""
        return self._embedder.encode([c.text for c in comments])

    def theme_probabilities(self, comments: Sequence[CommentInput], vectors: Vectors) -> Matrix:
        """(comments × themes) probabilities, themes in ``theme_ids`` order."""
        similarities = self.prototypes.similarities(vectors)
        if self.model is None:
            return softmax(similarities, PROTOTYPE_TEMPERATURE)
        return self.model.theme_probabilities([c.text for c in comments], vectors, similarities)

    def positive_probabilities(self, comments: Sequence[CommentInput], vectors: Vectors) -> Matrix:
        """Probability that each comment is positive."""
        if self.model is not None:
            return self.model.positive_probability(vectors, rating_features(comments))
        sims = (vectors @ self._anchors.T).astype(np.float64)
        n = len(POSITIVE_ANCHORS)
        from_text = softmax(
            np.stack([sims[:, :n].max(axis=1), sims[:, n:].max(axis=1)], axis=1),
            PROTOTYPE_TEMPERATURE,
        )[:, 0]
        out = from_text.copy()
        for i, comment in enumerate(comments):
            rating = signed_rating(comment)
            if rating is not None and rating != 0:
                out[i] = (
                    RATING_POLARITY_CONFIDENCE if rating > 0 else 1 - RATING_POLARITY_CONFIDENCE
                )
        return out

    def tag(self, comments: Sequence[CommentInput]) -> list[Tagging]:
        """Tag comments."""
        return self.tag_embedded(comments, self.embed(comments))

    def tag_embedded(self, comments: Sequence[CommentInput], vectors: Vectors) -> list[Tagging]:
        """Tag comments whose embeddings are already known."""
        themes = self.theme_probabilities(comments, vectors)
        positive = self.positive_probabilities(comments, vectors)
        return [self._decide(themes[i], float(positive[i])) for i in range(len(comments))]

    def _decide(self, probabilities: Matrix, positive: float) -> Tagging:
        order = np.argsort(-probabilities, kind="stable")
        top = int(order[0])
        chosen = [top] + [
            int(j)
            for j in order[1:]
            if probabilities[j] >= TAG_THRESHOLD and self.theme_ids[top] != OTHER_THEME
        ]
        chosen = [j for j in chosen if j == top or self.theme_ids[j] != OTHER_THEME]
        scores = tuple(
            ThemeScore(
                theme_id=self.theme_ids[j],
                confidence=float(probabilities[j]),
                needs_review=bool(probabilities[j] < REVIEW_THRESHOLD),
            )
            for j in chosen
        )
        polarity = "positive" if positive >= 0.5 else "negative"
        confidence = max(positive, 1.0 - positive)
        return Tagging(
            themes=scores,
            polarity=polarity,
            polarity_confidence=confidence,
            needs_review=scores[0].needs_review or confidence < POLARITY_REVIEW_THRESHOLD,
        )
