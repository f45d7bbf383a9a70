"""Tag comments with themes (multi-label, with confidences) and a polarity.

Without a trained model the tagger matches comments to the codebook's phrases (prototypes) and
polarity anchors; with one it uses the model's three answers (themes, primary theme,
polarity; ``feedback.model``). Either way themes are ranked by their probability blended with
the primary-theme probability, the top theme is always kept, other themes join above
``TAG_THRESHOLD``, "other" never sits beside a real theme, and a tagging whose top theme or
polarity is less sure than ``REVIEW_THRESHOLD`` / ``POLARITY_REVIEW_THRESHOLD`` is flagged for
a person to look at.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from feedback.codebook import OTHER_THEME
from feedback.embedder import Embedder, Vectors, get_embedder
from feedback.features import (
    CommentInput,
    Matrix,
    Prototypes,
    comment_features,
    prototypes_for,
    signed_rating,
    softmax,
)
from feedback.model import Prediction, TaggerModel
from feedback.models import POLARITIES
from feedback.views import ThemeView

# Constants here and in ``feedback.model`` were chosen by group k-fold (by source) on the
# labelled set's training split, never on its test split.
# A second theme is tagged when its probability reaches this.
TAG_THRESHOLD = 0.25
# Below this a theme tag, or the top theme of a comment, goes to review; below the second a
# polarity does. In group k-fold these flag about 45 % of comments and 63 % of the mistaken
# ones (0.5 and 0.6: 65 % and 82 %).
REVIEW_THRESHOLD = 0.4
POLARITY_REVIEW_THRESHOLD = 0.55
# Weight of the primary-theme softmax against the per-theme probabilities when ranking themes
# (0.85 against 0.5: top-1 = primary 0.650 against 0.617 in group k-fold).
PRIMARY_WEIGHT = 0.85
# Softmax temperature turning cosine similarities into theme probabilities (codebook only):
# cosines of related sentences differ by a few hundredths, so they need sharpening.
PROTOTYPE_TEMPERATURE = 0.05
# Confidence of a polarity read off an explicit rating, when there is no trained model.
RATING_POLARITY_CONFIDENCE = 0.9
# Codebook-only polarity: the nearest of these anchors, in ``POLARITIES`` order.
POLARITY_ANCHORS = (
    ("this is great, helpful and I love it", "works well and saves me time"),
    ("this is bad, annoying and broken", "it is wrong, slow and frustrating"),
    ("could you add an option for this", "it works for some things and not for others"),
)


@functools.cache
def _anchors(embedder: Embedder) -> tuple[Vectors, npt.NDArray[np.intp]]:
    texts = [text for group in POLARITY_ANCHORS for text in group]
    owners = np.array([i for i, group in enumerate(POLARITY_ANCHORS) for _ in group])
    return embedder.encode(texts), owners


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

    def predict(self, comments: Sequence[CommentInput], vectors: Vectors) -> Prediction:
        """Theme, primary and polarity probabilities (themes in ``theme_ids`` order)."""
        similarities = self.prototypes.similarities(vectors)
        if self.model is not None:
            return self.model.predict(
                [c.text for c in comments], vectors, similarities, comment_features(comments)
            )
        themes = softmax(similarities, PROTOTYPE_TEMPERATURE)
        return Prediction(
            themes=themes, primary=themes, polarity=self._anchor_polarity(comments, vectors)
        )

    def _anchor_polarity(self, comments: Sequence[CommentInput], vectors: Vectors) -> Matrix:
        anchors, owners = self._anchors
        sims = (vectors @ anchors.T).astype(np.float64)
        nearest = np.stack(
            [sims[:, owners == k].max(axis=1) for k in range(len(POLARITIES))], axis=1
        )
        out = softmax(nearest, PROTOTYPE_TEMPERATURE)
        for i, comment in enumerate(comments):
            rating = signed_rating(comment)
            if rating is not None and rating != 0:
                rest = (1 - RATING_POLARITY_CONFIDENCE) / (len(POLARITIES) - 1)
                out[i] = rest
                out[i, POLARITIES.index("positive" if rating > 0 else "negative")] = (
                    RATING_POLARITY_CONFIDENCE
                )
        return out

    def tag(self, comments: Sequence[CommentInput]) -> list[Tagging]:
        """Tag comments."""
        return self.tag_embedded(comments, self.embed(comments))

    def tag_embedded(self, comments: Sequence[CommentInput], vectors: Vectors) -> list[Tagging]:
        """Tag comments whose embeddings are already known."""
        prediction = self.predict(comments, vectors)
        return [
            self._decide(prediction.themes[i], prediction.primary[i], prediction.polarity[i])
            for i in range(len(comments))
        ]

    def _decide(self, probabilities: Matrix, primary: Matrix, polarity: Matrix) -> Tagging:
        rank = (1 - PRIMARY_WEIGHT) * probabilities + PRIMARY_WEIGHT * primary
        order = np.argsort(-rank, kind="stable")
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
                confidence=float(max(probabilities[j], rank[j])),
                needs_review=bool(max(probabilities[j], rank[j]) < REVIEW_THRESHOLD),
            )
            for j in chosen
        )
        best = int(np.argmax(polarity))
        confidence = float(polarity[best])
        return Tagging(
            themes=scores,
            polarity=POLARITIES[best],
            polarity_confidence=confidence,
            needs_review=scores[0].needs_review or confidence < POLARITY_REVIEW_THRESHOLD,
        )
