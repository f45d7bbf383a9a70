"""The learned part of the tagger: linear classifiers trained on corrected examples.

Two one-vs-rest logistic regressions per theme, averaged: one on the sentence embedding plus
the theme-similarity scores, one on TF-IDF word unigrams and bigrams (keywords such as "slow"
or "docstring" carry a lot). A third logistic regression reads polarity from the embedding and
the rating. Weights are plain arrays (saved as ``.npz``), so loading a version runs no pickle.
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

# Inverse regularisation strength; 4 did best in 10-fold CV on the labelled set (1, 4, 16 tried).
THEME_C = 4.0
KEYWORD_C = 8.0
POLARITY_C = 4.0
MAX_ITER = 2000
_TFIDF = {"ngram_range": (1, 2), "sublinear_tf": True, "token_pattern": r"(?u)\b\w+\b"}


def _vectorizer(vocabulary: dict[str, int] | None = None) -> Any:
    # scikit-learn is imported when first needed: ``codelift`` starts without paying for it.
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(vocabulary=vocabulary, **_TFIDF)


def _sigmoid(z: Matrix) -> Matrix:
    out: Matrix = 1.0 / (1.0 + np.exp(-z))
    return out


@dataclasses.dataclass(frozen=True)
class TrainingSet:
    """Examples as the classifiers take them; polarity is None where unknown (codebook phrases)."""

    texts: list[str]
    vectors: Vectors
    similarities: Matrix
    ratings: Matrix
    labels: Matrix  # examples × themes, 0/1
    polarity: list[bool | None]


@dataclasses.dataclass(frozen=True)
class TaggerModel:
    """Trained weights; theme rows follow ``theme_ids`` (the codebook it was trained on)."""

    theme_ids: tuple[str, ...]
    embedding_coef: Matrix
    embedding_intercept: Matrix
    vocabulary: tuple[str, ...]
    idf: Matrix
    keyword_coef: Matrix
    keyword_intercept: Matrix
    polarity_coef: Matrix
    polarity_intercept: float

    def theme_probabilities(
        self, texts: Sequence[str], vectors: Vectors, similarities: Matrix
    ) -> Matrix:
        """(comments × themes) probability that each theme applies."""
        features = np.hstack([vectors, similarities])
        p_embedding = _sigmoid(features @ self.embedding_coef.T + self.embedding_intercept)
        vectorizer = _vectorizer({term: i for i, term in enumerate(self.vocabulary)})
        vectorizer.idf_ = self.idf
        keywords = vectorizer.transform(list(texts))
        p_keywords = _sigmoid(np.asarray(keywords @ self.keyword_coef.T) + self.keyword_intercept)
        out: Matrix = (p_embedding + p_keywords) / 2.0
        return out

    def positive_probability(self, vectors: Vectors, ratings: Matrix) -> Matrix:
        """Probability that each comment is positive."""
        features = np.hstack([vectors, ratings])
        return _sigmoid(features @ self.polarity_coef + self.polarity_intercept)

    def to_bytes(self) -> bytes:
        """The weights as ``.npz`` bytes."""
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            theme_ids=np.array(self.theme_ids),
            embedding_coef=self.embedding_coef,
            embedding_intercept=self.embedding_intercept,
            vocabulary=np.array(self.vocabulary),
            idf=self.idf,
            keyword_coef=self.keyword_coef,
            keyword_intercept=self.keyword_intercept,
            polarity_coef=self.polarity_coef,
            polarity_intercept=np.array([self.polarity_intercept]),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> TaggerModel:
        """Weights saved by ``to_bytes``."""
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return cls(
                theme_ids=tuple(str(t) for t in arrays["theme_ids"]),
                embedding_coef=arrays["embedding_coef"],
                embedding_intercept=arrays["embedding_intercept"],
                vocabulary=tuple(str(t) for t in arrays["vocabulary"]),
                idf=arrays["idf"],
                keyword_coef=arrays["keyword_coef"],
                keyword_intercept=arrays["keyword_intercept"],
                polarity_coef=arrays["polarity_coef"],
                polarity_intercept=float(arrays["polarity_intercept"][0]),
            )


def _fit(features: Matrix, target: Matrix, c: float) -> tuple[Matrix, float]:
    """Weights and intercept of one logistic regression; a one-class target gets a constant."""
    if target.min() == target.max():
        # No positive (or no negative) example: predict that class with high confidence.
        return np.zeros(features.shape[1]), (6.0 if target[0] else -6.0)
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(C=c, max_iter=MAX_ITER).fit(features, target)
    return np.asarray(model.coef_[0], dtype=np.float64), float(model.intercept_[0])


def train_model(theme_ids: Sequence[str], data: TrainingSet) -> TaggerModel:
    """Fit the theme and polarity classifiers on a training set."""
    from threadpoolctl import threadpool_limits

    # These problems are tiny: BLAS threads only spin and wait (10x the CPU time, measured).
    with threadpool_limits(1):
        return _train(theme_ids, data)


def _train(theme_ids: Sequence[str], data: TrainingSet) -> TaggerModel:
    features = np.hstack([data.vectors, data.similarities])
    vectorizer = _vectorizer().fit(data.texts)
    keywords = vectorizer.transform(data.texts)
    embedding = [_fit(features, data.labels[:, j], THEME_C) for j in range(len(theme_ids))]
    keyword = [_fit(keywords, data.labels[:, j], KEYWORD_C) for j in range(len(theme_ids))]
    known = [i for i, p in enumerate(data.polarity) if p is not None]
    polarity_target = np.array([float(bool(data.polarity[i])) for i in known])
    polarity_coef, polarity_intercept = _fit(
        np.hstack([data.vectors[known], data.ratings[known]]), polarity_target, POLARITY_C
    )
    vocabulary = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.__getitem__)
    return TaggerModel(
        theme_ids=tuple(theme_ids),
        embedding_coef=np.vstack([w for w, _ in embedding]),
        embedding_intercept=np.array([b for _, b in embedding]),
        vocabulary=tuple(vocabulary),
        idf=np.asarray(vectorizer.idf_, dtype=np.float64),
        keyword_coef=np.vstack([w for w, _ in keyword]),
        keyword_intercept=np.array([b for _, b in keyword]),
        polarity_coef=polarity_coef,
        polarity_intercept=polarity_intercept,
    )
