"""The learned part of the tagger: linear classifiers trained on labelled comments.

Three questions, each answered by two logistic regressions whose probabilities are averaged:
one reads the sentence embedding (plus the similarity to each theme's phrases, the rating and a
few cue features), one reads TF-IDF word unigrams and bigrams (keywords such as "slow",
"docstring" or "please add" carry a lot).

- **Which themes apply**: one-vs-rest per theme (a comment has 1–3 themes).
- **Which theme is primary**: one softmax over the themes, trained on the primary label; it
  ranks the themes, since "mainly about" is a choice among them, not a yes/no per theme.
- **Polarity**: one softmax over positive / negative / neutral.

Weights are plain arrays (saved as ``.npz``), so loading a version runs no pickle.
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from feedback.embedder import Vectors
from feedback.features import Matrix
from feedback.models import POLARITIES

# Inverse regularisation strengths, chosen by group k-fold (by source) on the training split
# (1, 4 and 16 tried for each; class weights "balanced" tried and left: no gain).
THEME_C = 16.0
KEYWORD_C = 16.0
PRIMARY_C = 4.0
POLARITY_C = 2.0
MAX_ITER = 3000
# Weight of the keyword model against the embedding model in each average: keywords name
# themes well ("docstring", "slow"); stance is better read from the embedding.
THEME_WORDS_WEIGHT = 0.5
PRIMARY_WORDS_WEIGHT = 0.5
POLARITY_WORDS_WEIGHT = 0.3
# Words seen in fewer comments than this carry no weight (typos, names, one thread's jargon).
MIN_DF = 2
_TFIDF = {
    "ngram_range": (1, 2),
    "sublinear_tf": True,
    "token_pattern": r"(?u)\b\w+\b|[?!]",
    "min_df": MIN_DF,
}


def _vectorizer(vocabulary: dict[str, int] | None = None) -> Any:
    # scikit-learn is imported when first needed: ``codelift`` starts without paying for it.
    from sklearn.feature_extraction.text import TfidfVectorizer

    options = dict(_TFIDF)
    if vocabulary is not None:
        options.pop("min_df")
    return TfidfVectorizer(vocabulary=vocabulary, **options)


def _sigmoid(z: Matrix) -> Matrix:
    out: Matrix = 1.0 / (1.0 + np.exp(-z))
    return out


def _softmax(z: Matrix) -> Matrix:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: Matrix = e / e.sum(axis=1, keepdims=True)
    return out


@dataclasses.dataclass(frozen=True)
class TrainingSet:
    """Examples as the classifiers take them.

    ``primary`` is each example's primary theme index; ``polarity`` its index in
    ``POLARITIES``, None where unknown (codebook phrases).
    """

    texts: list[str]
    vectors: Vectors
    similarities: Matrix
    extras: Matrix  # the rating and cue features of ``features.comment_features``
    labels: Matrix  # examples × themes, 0/1
    primary: list[int]
    polarity: list[int | None]


@dataclasses.dataclass(frozen=True, slots=True)
class Linear:
    """Weights of one linear layer: scores = features @ coef.T + intercept."""

    coef: Matrix
    intercept: Matrix

    def scores(self, features: Any) -> Matrix:
        out: Matrix = np.asarray(features @ self.coef.T) + self.intercept
        return out


@dataclasses.dataclass(frozen=True)
class TaggerModel:
    """Trained weights; theme rows follow ``theme_ids`` (the codebook it was trained on)."""

    theme_ids: tuple[str, ...]
    vocabulary: tuple[str, ...]
    idf: Matrix
    themes_dense: Linear
    themes_words: Linear
    primary_dense: Linear
    primary_words: Linear
    polarity_dense: Linear
    polarity_words: Linear

    def _keywords(self, texts: Sequence[str]) -> Any:
        vectorizer = _vectorizer({term: i for i, term in enumerate(self.vocabulary)})
        vectorizer.idf_ = self.idf
        return vectorizer.transform(list(texts))

    def predict(
        self, texts: Sequence[str], vectors: Vectors, similarities: Matrix, extras: Matrix
    ) -> Prediction:
        """Theme, primary and polarity probabilities of comments."""
        dense = np.hstack([vectors, similarities, extras])
        words = self._keywords(texts)
        w = THEME_WORDS_WEIGHT
        themes = (1 - w) * _sigmoid(self.themes_dense.scores(dense)) + w * _sigmoid(
            self.themes_words.scores(words)
        )
        w = PRIMARY_WORDS_WEIGHT
        primary = (1 - w) * _softmax(self.primary_dense.scores(dense)) + w * _softmax(
            self.primary_words.scores(words)
        )
        w = POLARITY_WORDS_WEIGHT
        polarity = (1 - w) * _softmax(self.polarity_dense.scores(dense)) + w * _softmax(
            self.polarity_words.scores(words)
        )
        return Prediction(themes=themes, primary=primary, polarity=polarity)

    def to_bytes(self) -> bytes:
        """The weights as ``.npz`` bytes."""
        arrays: dict[str, Any] = {
            "theme_ids": np.array(self.theme_ids),
            "vocabulary": np.array(self.vocabulary),
            "idf": self.idf,
        }
        for name in _LAYERS:
            layer: Linear = getattr(self, name)
            arrays[f"{name}_coef"] = layer.coef.astype(np.float32)
            arrays[f"{name}_intercept"] = layer.intercept
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> TaggerModel:
        """Weights saved by ``to_bytes``."""
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            layers = {
                name: Linear(arrays[f"{name}_coef"].astype(np.float64), arrays[f"{name}_intercept"])
                for name in _LAYERS
            }
            return cls(
                theme_ids=tuple(str(t) for t in arrays["theme_ids"]),
                vocabulary=tuple(str(t) for t in arrays["vocabulary"]),
                idf=arrays["idf"],
                **layers,
            )


_LAYERS = (
    "themes_dense",
    "themes_words",
    "primary_dense",
    "primary_words",
    "polarity_dense",
    "polarity_words",
)


@dataclasses.dataclass(frozen=True, slots=True)
class Prediction:
    """(comments × themes) theme and primary probabilities, (comments × 3) polarity ones."""

    themes: Matrix
    primary: Matrix
    polarity: Matrix


def _binary(features: Any, target: Matrix, c: float) -> tuple[Matrix, float]:
    """Weights and intercept of one logistic regression; a one-class target gets a constant."""
    if target.min() == target.max():
        # No positive (or no negative) example: predict that class with high confidence.
        return np.zeros(features.shape[1]), (6.0 if target[0] else -6.0)
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=MAX_ITER).fit(features, target)
    return np.asarray(model.coef_[0], dtype=np.float64), float(model.intercept_[0])


def _one_vs_rest(features: Any, labels: Matrix, c: float) -> Linear:
    fitted = [_binary(features, labels[:, j], c) for j in range(labels.shape[1])]
    return Linear(np.vstack([w for w, _ in fitted]), np.array([b for _, b in fitted]))


def _multinomial(features: Any, target: Sequence[int], classes: int, c: float) -> Linear:
    """A softmax regression over ``classes`` classes; classes never seen get a very low score."""
    y = np.asarray(target)
    coef = np.zeros((classes, features.shape[1]))
    intercept = np.full(classes, -12.0)
    seen = np.unique(y)
    if len(seen) == 1:
        intercept[seen[0]] = 6.0
        return Linear(coef, intercept)
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=MAX_ITER).fit(features, y)
    if len(seen) == 2:
        # scikit-learn fits one logit for two classes: the second class's score against the first.
        coef[seen[1]] = model.coef_[0]
        intercept[seen[0]] = 0.0
        intercept[seen[1]] = float(model.intercept_[0])
    else:
        coef[model.classes_] = model.coef_
        intercept[model.classes_] = model.intercept_
    return Linear(coef, intercept)


def train_model(theme_ids: Sequence[str], data: TrainingSet) -> TaggerModel:
    """Fit the theme, primary and polarity classifiers on a training set."""
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    # These problems are tiny: BLAS threads only spin and wait (10x the CPU time, measured).
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _train(theme_ids, data)


def _train(theme_ids: Sequence[str], data: TrainingSet) -> TaggerModel:
    dense = np.hstack([data.vectors, data.similarities, data.extras])
    vectorizer = _vectorizer().fit(data.texts)
    words = vectorizer.transform(data.texts)
    known = [i for i, p in enumerate(data.polarity) if p is not None]
    polarity = [int(p) for p in data.polarity if p is not None]
    vocabulary = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.__getitem__)
    themes = len(theme_ids)
    return TaggerModel(
        theme_ids=tuple(theme_ids),
        vocabulary=tuple(vocabulary),
        idf=np.asarray(vectorizer.idf_, dtype=np.float64),
        themes_dense=_one_vs_rest(dense, data.labels, THEME_C),
        themes_words=_one_vs_rest(words, data.labels, KEYWORD_C),
        primary_dense=_multinomial(dense, data.primary, themes, PRIMARY_C),
        primary_words=_multinomial(words, data.primary, themes, KEYWORD_C),
        polarity_dense=_multinomial(dense[known], polarity, len(POLARITIES), POLARITY_C),
        polarity_words=_multinomial(words[known], polarity, len(POLARITIES), KEYWORD_C),
    )
