"""How good the tagger is: per-theme precision/recall/F1, macro-F1, top-1 and polarity accuracy.

"Codebook only" tags with the codebook's phrases and the ratings alone. "With learning" trains
on corrections: k-fold cross-validation, each fold's comments tagged by a model trained on the
other folds (plus the codebook's phrases), so no comment is scored by a model that saw it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from feedback.dataset import Example, phrase_examples
from feedback.embedder import Vectors
from feedback.features import rating_features
from feedback.model import TaggerModel, TrainingSet, train_model
from feedback.options import DEFAULT_FOLDS
from feedback.tagger import Tagger, Tagging

# Below this many examples a cross-validated figure means little; none is reported.
MIN_EXAMPLES_FOR_CV = 20


@dataclasses.dataclass(frozen=True, slots=True)
class ThemeMetrics:
    """Multi-label scores of one theme."""

    theme_id: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclasses.dataclass(frozen=True, slots=True)
class EvaluationReport:
    """The figures of one way of tagging on one labelled set."""

    mode: str
    comments: int
    top1_accuracy: float
    polarity_accuracy: float
    macro_f1: float
    per_theme: tuple[ThemeMetrics, ...]
    folds: int | None = None

    def summary(self) -> dict[str, object]:
        """The headline figures (stored with each tagger version)."""
        return {
            "mode": self.mode,
            "comments": self.comments,
            "folds": self.folds,
            "top1_accuracy": round(self.top1_accuracy, 4),
            "polarity_accuracy": round(self.polarity_accuracy, 4),
            "macro_f1": round(self.macro_f1, 4),
        }


def score(
    mode: str,
    theme_ids: Sequence[str],
    truth: Sequence[Example],
    predicted: Sequence[Tagging],
    folds: int | None = None,
) -> EvaluationReport:
    """Compare predicted taggings with the true labels."""
    if len(truth) != len(predicted) or not truth:
        raise ValueError("need one prediction per labelled comment, and at least one comment")
    per_theme = []
    for theme_id in theme_ids:
        actual = np.array([theme_id in t.theme_ids for t in truth])
        guessed = np.array([any(s.theme_id == theme_id for s in p.themes) for p in predicted])
        hits = int(np.sum(actual & guessed))
        precision = hits / int(guessed.sum()) if guessed.any() else 0.0
        recall = hits / int(actual.sum()) if actual.any() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_theme.append(ThemeMetrics(theme_id, precision, recall, f1, int(actual.sum())))
    scored = [m for m in per_theme if m.support]
    top1 = np.mean([p.top_theme in t.theme_ids for t, p in zip(truth, predicted, strict=True)])
    with_polarity = [(t, p) for t, p in zip(truth, predicted, strict=True) if t.polarity]
    polarity = np.mean([t.polarity == p.polarity for t, p in with_polarity])
    return EvaluationReport(
        mode=mode,
        comments=len(truth),
        top1_accuracy=float(top1),
        polarity_accuracy=float(polarity),
        macro_f1=float(np.mean([m.f1 for m in scored])),
        per_theme=tuple(per_theme),
        folds=folds,
    )


def training_set(tagger: Tagger, examples: Sequence[Example], vectors: Vectors) -> TrainingSet:
    """Examples in the form the classifiers take, scored against the tagger's codebook."""
    index = {theme_id: j for j, theme_id in enumerate(tagger.theme_ids)}
    labels = np.zeros((len(examples), len(index)))
    for i, example in enumerate(examples):
        for theme_id in example.theme_ids:
            labels[i, index[theme_id]] = 1.0
    return TrainingSet(
        texts=[e.comment.text for e in examples],
        vectors=vectors,
        similarities=tagger.prototypes.similarities(vectors),
        ratings=rating_features([e.comment for e in examples]),
        labels=labels,
        polarity=[None if e.polarity is None else e.polarity == "positive" for e in examples],
    )


def fit(
    tagger: Tagger,
    examples: Sequence[Example],
    vectors: Vectors,
    phrases: Sequence[Example],
    phrase_vectors: Vectors,
) -> TaggerModel:
    """Train a model on examples plus the codebook's phrases."""
    data = training_set(tagger, [*examples, *phrases], np.vstack([vectors, phrase_vectors]))
    return train_model(tagger.theme_ids, data)


def cross_validated(
    tagger: Tagger,
    examples: Sequence[Example],
    vectors: Vectors,
    phrases: Sequence[Example],
    phrase_vectors: Vectors,
    *,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
) -> EvaluationReport:
    """k-fold figures of the learned tagger (``tagger`` gives the codebook; its model is unused)."""
    if len(examples) < max(folds, 2):
        raise ValueError(f"cross-validation needs at least {max(folds, 2)} examples")
    from sklearn.model_selection import KFold

    predicted: list[Tagging | None] = [None] * len(examples)
    splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(vectors):
        model = fit(tagger, [examples[i] for i in train], vectors[train], phrases, phrase_vectors)
        fold_tagger = tagger.with_model(model)
        tagged = fold_tagger.tag_embedded([examples[i].comment for i in test], vectors[test])
        for i, tagging in zip(test, tagged, strict=True):
            predicted[i] = tagging
    done = [p for p in predicted if p is not None]
    return score("with learning", tagger.theme_ids, examples, done, folds=folds)


def codebook_only(
    tagger: Tagger, examples: Sequence[Example], vectors: Vectors
) -> EvaluationReport:
    """Figures of tagging from the codebook's phrases and the ratings, with no training."""
    untrained = tagger.with_model(None)
    predicted = untrained.tag_embedded([e.comment for e in examples], vectors)
    return score("codebook only", tagger.theme_ids, examples, predicted)


def evaluate_labelled(
    tagger: Tagger, examples: Sequence[Example], *, folds: int = DEFAULT_FOLDS
) -> tuple[EvaluationReport, EvaluationReport]:
    """Codebook-only and cross-validated learned figures on a labelled set."""
    vectors = tagger.embed([e.comment for e in examples])
    phrases = phrase_examples(tagger.themes)
    phrase_vectors = tagger.embed([e.comment for e in phrases])
    return (
        codebook_only(tagger, examples, vectors),
        cross_validated(tagger, examples, vectors, phrases, phrase_vectors, folds=folds),
    )


def render(reports: Sequence[EvaluationReport]) -> str:
    """The reports side by side: per-theme P/R/F1, then the headline figures."""
    theme_ids = [m.theme_id for m in reports[0].per_theme]
    width = max(len(t) for t in theme_ids) + 2
    header = f"{'theme':<{width}}{'n':>4}" + "".join(f"  {r.mode[:14]:>14} P/R/F1" for r in reports)
    lines = [header]
    for i, theme_id in enumerate(theme_ids):
        cells = "".join(
            f"  {m.precision:5.2f}/{m.recall:4.2f}/{m.f1:4.2f}"
            for m in (r.per_theme[i] for r in reports)
        )
        lines.append(f"{theme_id:<{width}}{reports[0].per_theme[i].support:>4}{cells}")
    lines.append("")
    for r in reports:
        folds = f", {r.folds}-fold cross-validated" if r.folds else ""
        lines.append(
            f"{r.mode} ({r.comments} comments{folds}): top-1 accuracy {r.top1_accuracy:.3f}, "
            f"polarity accuracy {r.polarity_accuracy:.3f}, macro-F1 {r.macro_f1:.3f}"
        )
    return "\n".join(lines)
