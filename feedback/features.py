"""What the tagger sees of a comment: its embedding, its similarity to each theme, its rating."""

from __future__ import annotations

import dataclasses
import functools
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
