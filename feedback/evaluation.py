"""How good the tagger is, measured so that it cannot fool itself.

Real comments come in threads: a thread's comments share words and a topic, so a model that saw
one of them tags its neighbours too well. Every learned figure here therefore keeps whole
sources apart:

- **untouched split**: the shipped set's ``test`` comments, set aside by source before any
  tuning; the learned tagger trains on everything else and scores them once.
- **group k-fold**: the ``train`` comments in k folds by source (``GroupKFold``), each fold
  tagged by a model trained on the other folds; this is what tuning looks at.

Examples without a split (written comments, corrections) and the codebook's phrases only ever
train. "Codebook only" tags with the codebook's phrases and the ratings alone, nothing learned.

Figures: top-1 among the labelled themes (the top theme is one of the comment's themes), top-1
= primary, polarity over three classes and over the positive/negative comments only, macro-F1
over themes, per-theme precision/recall/F1, and confusion matrices of the primary theme and of
polarity (rows: truth, columns: prediction).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from feedback.dataset import Example, phrase_examples
from feedback.embedder import Vectors
from feedback.features import comment_features
from feedback.model import TaggerModel, TrainingSet, train_model
from feedback.models import POLARITIES
from feedback.options import DEFAULT_FOLDS
from feedback.tagger import Tagger, Tagging

# Below this many examples a cross-validated figure means little; none is reported.
MIN_EXAMPLES_FOR_CV = 20
UNTOUCHED = "untouched split"
GROUP_KFOLD = "group k-fold"


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
    primary_accuracy: float
    polarity_accuracy: float
    signed_polarity_accuracy: float | None
    macro_f1: float
    per_theme: tuple[ThemeMetrics, ...]
    # Rows: true primary theme (or polarity); columns: predicted top theme (or polarity).
    theme_confusion: tuple[tuple[int, ...], ...]
    polarity_confusion: tuple[tuple[int, ...], ...]
    # Share of comments flagged for review, and share of the mistaken ones (top theme not among
    # the labelled themes, or polarity wrong) that were flagged: what a reviewer would catch.
    review_share: float = 0.0
    mistakes_flagged: float | None = None
    folds: int | None = None
    protocol: str = ""

    def summary(self) -> dict[str, object]:
        """The headline figures."""
        return {
            "mode": self.mode,
            "protocol": self.protocol,
            "comments": self.comments,
            "folds": self.folds,
            "top1_accuracy": round(self.top1_accuracy, 4),
            "primary_accuracy": round(self.primary_accuracy, 4),
            "polarity_accuracy": round(self.polarity_accuracy, 4),
            "signed_polarity_accuracy": None
            if self.signed_polarity_accuracy is None
            else round(self.signed_polarity_accuracy, 4),
            "macro_f1": round(self.macro_f1, 4),
            "review_share": round(self.review_share, 4),
            "mistakes_flagged": None
            if self.mistakes_flagged is None
            else round(self.mistakes_flagged, 4),
        }

    def to_json(self) -> dict[str, object]:
        """Everything: headline figures, per-theme scores and both confusion matrices."""
        return {
            **self.summary(),
            "per_theme": {
                m.theme_id: {
                    "precision": round(m.precision, 4),
                    "recall": round(m.recall, 4),
                    "f1": round(m.f1, 4),
                    "support": m.support,
                }
                for m in self.per_theme
            },
            "theme_confusion": {
                "labels": [m.theme_id for m in self.per_theme],
                "counts": [list(row) for row in self.theme_confusion],
            },
            "polarity_confusion": {
                "labels": list(POLARITIES),
                "counts": [list(row) for row in self.polarity_confusion],
            },
        }


def _confusion(labels: Sequence[str], truth: Sequence[str], guess: Sequence[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    out = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, g in zip(truth, guess, strict=True):
        if t in index and g in index:
            out[index[t], index[g]] += 1
    return out


def _freeze(matrix: np.ndarray) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(v) for v in row) for row in matrix)


def score(
    mode: str,
    theme_ids: Sequence[str],
    truth: Sequence[Example],
    predicted: Sequence[Tagging],
    folds: int | None = None,
    protocol: str = "",
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
    pairs = list(zip(truth, predicted, strict=True))
    top1 = np.mean([p.top_theme in t.theme_ids for t, p in pairs])
    primary = np.mean([p.top_theme == t.primary for t, p in pairs])
    with_polarity = [(t, p) for t, p in pairs if t.polarity]
    polarity = np.mean([t.polarity == p.polarity for t, p in with_polarity])
    signed = [(t, p) for t, p in with_polarity if t.polarity != "neutral"]
    mistaken = [
        p
        for t, p in pairs
        if p.top_theme not in t.theme_ids or (t.polarity and t.polarity != p.polarity)
    ]
    return EvaluationReport(
        mode=mode,
        comments=len(truth),
        top1_accuracy=float(top1),
        primary_accuracy=float(primary),
        polarity_accuracy=float(polarity),
        signed_polarity_accuracy=float(np.mean([t.polarity == p.polarity for t, p in signed]))
        if signed
        else None,
        macro_f1=float(np.mean([m.f1 for m in scored])),
        per_theme=tuple(per_theme),
        theme_confusion=_freeze(
            _confusion(theme_ids, [t.primary for t, _ in pairs], [p.top_theme for _, p in pairs])
        ),
        polarity_confusion=_freeze(
            _confusion(
                POLARITIES,
                [str(t.polarity) for t, _ in with_polarity],
                [p.polarity for _, p in with_polarity],
            )
        ),
        review_share=float(np.mean([p.needs_review for p in predicted])),
        mistakes_flagged=float(np.mean([p.needs_review for p in mistaken])) if mistaken else None,
        folds=folds,
        protocol=protocol,
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
        extras=comment_features([e.comment for e in examples]),
        labels=labels,
        primary=[index[e.primary] for e in examples],
        polarity=[None if e.polarity is None else POLARITIES.index(e.polarity) for e in examples],
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


@dataclasses.dataclass(frozen=True)
class Embedded:
    """Labelled examples with their embeddings, and the codebook's phrases with theirs."""

    examples: list[Example]
    vectors: Vectors
    phrases: list[Example]
    phrase_vectors: Vectors

    @classmethod
    def of(cls, tagger: Tagger, examples: Sequence[Example]) -> Embedded:
        """Embed examples and the tagger's codebook phrases."""
        phrases = phrase_examples(tagger.themes)
        return cls(
            examples=list(examples),
            vectors=tagger.embed([e.comment for e in examples]),
            phrases=phrases,
            phrase_vectors=tagger.embed([e.comment for e in phrases]),
        )

    def indices(self, split: str | None) -> list[int]:
        """Positions of the examples of a split (None: those that only train)."""
        return [i for i, e in enumerate(self.examples) if e.split == split]

    def fit(self, tagger: Tagger, rows: Sequence[int]) -> TaggerModel:
        """A model trained on the examples at ``rows`` and the phrases."""
        return fit(
            tagger,
            [self.examples[i] for i in rows],
            self.vectors[list(rows)],
            self.phrases,
            self.phrase_vectors,
        )

    def tag(self, tagger: Tagger, rows: Sequence[int]) -> list[Tagging]:
        """Tag the examples at ``rows``."""
        return tagger.tag_embedded([self.examples[i].comment for i in rows], self.vectors[rows])


def group_cross_validated(
    tagger: Tagger,
    data: Embedded,
    scored: Sequence[int],
    *,
    folds: int = DEFAULT_FOLDS,
) -> EvaluationReport:
    """k-fold figures of the learned tagger on ``scored`` examples, folds by source.

    Examples outside ``scored`` that have no split train in every fold; ``test`` examples never
    take part (``tagger`` gives the codebook; its model is unused).
    """
    from sklearn.model_selection import GroupKFold

    groups = [data.examples[i].source for i in scored]
    if len(set(groups)) < max(folds, 2):
        raise ValueError(
            f"cross-validation needs at least {max(folds, 2)} sources, got {len(set(groups))}"
        )
    always = data.indices(None)
    predicted: dict[int, Tagging] = {}
    for train, test in GroupKFold(n_splits=folds).split(scored, groups=groups):
        model = data.fit(tagger, [*always, *(scored[i] for i in train)])
        rows = [scored[i] for i in test]
        for row, tagging in zip(rows, data.tag(tagger.with_model(model), rows), strict=True):
            predicted[row] = tagging
    return score(
        "with learning",
        tagger.theme_ids,
        [data.examples[i] for i in scored],
        [predicted[i] for i in scored],
        folds=folds,
        protocol=GROUP_KFOLD,
    )


def held_out(tagger: Tagger, data: Embedded) -> EvaluationReport:
    """The learned tagger trained on everything but the ``test`` split, scored on it."""
    test = data.indices("test")
    if not test:
        raise ValueError("the labelled set has no 'test' split")
    train = [i for i in range(len(data.examples)) if i not in set(test)]
    model = data.fit(tagger, train)
    predicted = data.tag(tagger.with_model(model), test)
    return score(
        "with learning",
        tagger.theme_ids,
        [data.examples[i] for i in test],
        predicted,
        protocol=UNTOUCHED,
    )


def codebook_only(
    tagger: Tagger, examples: Sequence[Example], vectors: Vectors, protocol: str = ""
) -> EvaluationReport:
    """Figures of tagging from the codebook's phrases and the ratings, with no training."""
    untrained = tagger.with_model(None)
    predicted = untrained.tag_embedded([e.comment for e in examples], vectors)
    return score("codebook only", tagger.theme_ids, examples, predicted, protocol=protocol)


def with_splits(examples: Sequence[Example]) -> list[Example]:
    """The examples as given; a set without any split (an outside file) becomes all ``train``."""
    if any(e.split is not None for e in examples):
        return list(examples)
    return [dataclasses.replace(e, split="train") for e in examples]


def learned_figures(
    tagger: Tagger, data: Embedded, *, folds: int = DEFAULT_FOLDS
) -> list[EvaluationReport]:
    """The learned tagger on the untouched split (when there is one) and under group k-fold
    (when the training split has enough comments and sources)."""
    reports = []
    if data.indices("test"):
        reports.append(held_out(tagger, data))
    scored = data.indices("train")
    sources = {data.examples[i].source for i in scored}
    if len(scored) >= MIN_EXAMPLES_FOR_CV and len(sources) >= max(folds, 2):
        reports.append(group_cross_validated(tagger, data, scored, folds=folds))
    return reports


def evaluate_labelled(
    tagger: Tagger, examples: Sequence[Example], *, folds: int = DEFAULT_FOLDS
) -> list[EvaluationReport]:
    """Codebook-only and learned figures, on the untouched split and under group k-fold."""
    data = Embedded.of(tagger, with_splits(examples))
    reports = []
    for protocol, split in ((UNTOUCHED, "test"), (GROUP_KFOLD, "train")):
        rows = data.indices(split)
        if not rows:
            continue
        reports.append(
            codebook_only(tagger, [data.examples[i] for i in rows], data.vectors[rows], protocol)
        )
        if split == "test":
            reports.append(held_out(tagger, data))
        else:
            reports.append(group_cross_validated(tagger, data, rows, folds=folds))
    return reports


def render(reports: Sequence[EvaluationReport]) -> str:
    """The reports: per-theme P/R/F1 side by side, the headline figures, the confusions."""
    theme_ids = [m.theme_id for m in reports[0].per_theme]
    width = max(len(t) for t in theme_ids) + 2
    names = [f"{r.mode} / {r.protocol}" if r.protocol else r.mode for r in reports]
    lines = ["per theme: support, then precision/recall/F1 of each column:"]
    lines += [f"  [{i + 1}] {name}" for i, name in enumerate(names)]
    lines.append(
        f"{'theme':<{width}}"
        + "".join(f"{f'[{i + 1}] n':>6}{'P/R/F1':>16}" for i in range(len(reports)))
    )
    for i, theme_id in enumerate(theme_ids):
        cells = "".join(
            f"{m.support:>6}  {m.precision:4.2f}/{m.recall:4.2f}/{m.f1:4.2f}"
            for m in (r.per_theme[i] for r in reports)
        )
        lines.append(f"{theme_id:<{width}}{cells}")
    lines.append("")
    for name, r in zip(names, reports, strict=True):
        folds = f", {r.folds} folds by source" if r.folds else ""
        signed = (
            f", polarity pos/neg {r.signed_polarity_accuracy:.3f}"
            if r.signed_polarity_accuracy is not None
            else ""
        )
        flagged = (
            f"; needs review {r.review_share:.0%} of comments, {r.mistakes_flagged:.0%} of mistakes"
            if r.mistakes_flagged is not None
            else ""
        )
        lines.append(
            f"{name} ({r.comments} comments{folds}): top-1 {r.top1_accuracy:.3f}, "
            f"top-1 = primary {r.primary_accuracy:.3f}, polarity 3-way {r.polarity_accuracy:.3f}"
            f"{signed}, macro-F1 {r.macro_f1:.3f}{flagged}"
        )
    learned = [r for r in reports if r.mode == "with learning"]
    if learned:
        best = learned[0]
        lines += ["", f"primary theme confusion ({best.mode} / {best.protocol}; rows truth):"]
        short = [t[:6] for t in theme_ids]
        lines.append(f"{'':<{width}}" + "".join(f"{s:>7}" for s in short))
        for theme_id, row in zip(theme_ids, best.theme_confusion, strict=True):
            lines.append(f"{theme_id:<{width}}" + "".join(f"{v:>7}" for v in row))
        lines += ["", "polarity confusion (rows truth):"]
        lines.append(f"{'':<10}" + "".join(f"{p:>10}" for p in POLARITIES))
        for polarity, row in zip(POLARITIES, best.polarity_confusion, strict=True):
            lines.append(f"{polarity:<10}" + "".join(f"{v:>10}" for v in row))
    return "\n".join(lines)
