"""How close a completion is to the code it should restore: exact match, chrF, edit similarity.

All scores lie in [0, 1]. Whitespace is kept everywhere (in code it is part of the meaning:
indentation), except by ``exact_stripped``, which ignores leading and trailing whitespace.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter

# chrF's usual settings (Popović, 2015): character n-grams up to 6, recall weighted 2× (β = 2).
CHRF_MAX_ORDER = 6
CHRF_BETA = 2.0


def levenshtein(a: str, b: str) -> int:
    """Edits (insert, delete, substitute one character) that turn ``a`` into ``b``."""
    # A shared head and tail cost no edits; dropping them first makes a near-exact completion
    # cheap (the table below is len(a) × len(b): 400 × 256 characters take about 50 ms).
    head = len(os.path.commonprefix([a, b]))
    a, b = a[head:], b[head:]
    tail = len(os.path.commonprefix([a[::-1], b[::-1]]))
    a, b = a[: len(a) - tail], b[: len(b) - tail]
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def edit_similarity(prediction: str, target: str) -> float:
    """1 − Levenshtein / length of the longer text; 1 when both are empty."""
    longest = max(len(prediction), len(target))
    if longest == 0:
        return 1.0
    return 1.0 - levenshtein(prediction, target) / longest


def _ngrams(text: str, order: int) -> Counter[str]:
    return Counter(text[i : i + order] for i in range(len(text) - order + 1))


def chrf(
    prediction: str, target: str, *, max_order: int = CHRF_MAX_ORDER, beta: float = CHRF_BETA
) -> float:
    """Character n-gram F-score of ``prediction`` against ``target``.

    For each order n = 1..N that the longer text has n-grams of (N = ``max_order``), precision
    P_n and recall R_n count clipped n-gram matches, F_n = (1 + β²) P_n R_n / (β² P_n + R_n)
    (0 when nothing matches, or when one text is too short to have n-grams of that order), and
    chrF is the mean of F_n. A truncated completion is penalised at the orders it lacks.
    Both texts empty: 1.
    """
    orders = min(max_order, max(len(prediction), len(target)))
    if orders == 0:
        return 1.0
    factor = beta * beta
    total = 0.0
    for order in range(1, orders + 1):
        predicted, expected = _ngrams(prediction, order), _ngrams(target, order)
        matches = sum((predicted & expected).values())
        if matches == 0:
            continue
        precision = matches / sum(predicted.values())
        recall = matches / sum(expected.values())
        total += (1 + factor) * precision * recall / (factor * precision + recall)
    return total / orders


@dataclasses.dataclass(frozen=True, slots=True)
class Scores:
    """Every text metric of one completion."""

    exact: bool
    exact_stripped: bool
    chrf: float
    edit_similarity: float


def score(prediction: str, target: str) -> Scores:
    """All text metrics of ``prediction`` against ``target``."""
    return Scores(
        exact=prediction == target,
        exact_stripped=prediction.strip() == target.strip(),
        chrf=chrf(prediction, target),
        edit_similarity=edit_similarity(prediction, target),
    )
