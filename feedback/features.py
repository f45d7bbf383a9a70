"""What the tagger sees of a comment: its embedding, its similarity to each theme, its rating."""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from feedback.embedder import Embedder, Vectors
from feedback.views import ThemeView

Matrix = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True, slots=True)
class CommentInput:
    """A comment as the tagger takes it."""

    text: str
    rating: int | None = None
    rating_scale: str = "stars"


def signed_rating(comment: CommentInput) -> float | None:
    """The rating on a −1 … +1 scale (thumbs ±1; stars 1→−1, 3→0, 5→+1), None when unrated."""
    if comment.rating is None:
        return None
    if comment.rating_scale == "thumbs":
        return float(np.sign(comment.rating))
    return (comment.rating - 3) / 2.0


def rating_features(comments: Sequence[CommentInput]) -> Matrix:
    """Two columns per comment: the signed rating (0 when unrated) and whether there is one."""
    out = np.zeros((len(comments), 2))
    for i, comment in enumerate(comments):
        value = signed_rating(comment)
        if value is not None:
            out[i] = (value, 1.0)
    return out


# An explicit ask: what makes a comment a feature request, and its polarity often neutral.
_REQUEST = re.compile(
    r"\b(please|could you|can you|would (?:be|love)|wish|i'?d like|add (?:an? )?(?:option|setting|"
    r"way|toggle)|is there (?:a|any) way|feature request|let me|allow|should be able)\b",
    re.IGNORECASE,
)
# A turn ("…, but …"): the clause after it usually carries the stance.
_CONTRAST = re.compile(r"\b(but|however|although|though|except|yet)\b", re.IGNORECASE)


def cue_features(text: str) -> list[float]:
    """Question, request and contrast cues, and the length (log characters) of a comment."""
    return [
        1.0 if "?" in text else 0.0,
        1.0 if _REQUEST.search(text) else 0.0,
        1.0 if _CONTRAST.search(text) else 0.0,
        math.log1p(len(text)) / 6.0,
    ]


CUE_FEATURES = 4


def comment_features(comments: Sequence[CommentInput]) -> Matrix:
    """The rating columns of ``rating_features`` and the cues of ``cue_features``."""
    out = np.zeros((len(comments), 2 + CUE_FEATURES))
    out[:, :2] = rating_features(comments)
    for i, comment in enumerate(comments):
        out[i, 2:] = cue_features(comment.text)
    return out


def theme_phrases(theme: ThemeView) -> list[str]:
    """The texts that stand for a theme: its name and description, then its example phrases."""
    return [f"{theme.name}: {theme.description}", *theme.examples]


class Prototypes:
    """The embedded phrases of each theme; a comment's score is its best cosine match."""

    def __init__(self, themes: Sequence[ThemeView], embedder: Embedder) -> None:
        self.theme_ids = tuple(theme.id for theme in themes)
        phrases: list[str] = []
        owners: list[int] = []
        for index, theme in enumerate(themes):
            for phrase in theme_phrases(theme):
                phrases.append(phrase)
                owners.append(index)
        self._vectors = embedder.encode(phrases)
        self._owners = np.asarray(owners)

    def similarities(self, vectors: Vectors) -> Matrix:
        """(comments × themes) best cosine similarity to any of the theme's phrases."""
        sims = (vectors @ self._vectors.T).astype(np.float64)
        out = np.full((len(vectors), len(self.theme_ids)), -1.0)
        for index in range(len(self.theme_ids)):
            out[:, index] = sims[:, self._owners == index].max(axis=1)
        return out


@functools.lru_cache(maxsize=8)
def prototypes_for(themes: tuple[ThemeView, ...], embedder: Embedder) -> Prototypes:
    """Prototypes of a codebook, cached by its content (a codebook edit makes a new entry)."""
    return Prototypes(themes, embedder)


def softmax(scores: Matrix, temperature: float) -> Matrix:
    """Row-wise softmax of scores / temperature."""
    z = scores / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: Matrix = e / e.sum(axis=1, keepdims=True)
    return out
