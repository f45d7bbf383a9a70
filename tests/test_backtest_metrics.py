"""Text metrics of the backtest against values worked out by hand."""

from __future__ import annotations

import pytest

from backtest.metrics import chrf, edit_similarity, levenshtein, score


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("kitten", "sitting", 3),  # k→s, e→i, +g
        ("", "abc", 3),
        ("abc", "abc", 0),
        ("flaw", "lawn", 2),  # -f, +n
        ("    return x", "return x", 4),  # indentation counts
        ("return a + b", "return a - b", 1),  # shared head and tail
        ("aaa", "aa", 1),
        ("abcabc", "abc", 3),
        ("xabcx", "abc", 2),
    ],
)
def test_levenshtein(a: str, b: str, distance: int) -> None:
    assert levenshtein(a, b) == distance
    assert levenshtein(b, a) == distance


@pytest.mark.parametrize(
    ("prediction", "target", "expected"),
    [
        ("kitten", "sitting", 1 - 3 / 7),
        ("flaw", "lawn", 0.5),
        ("", "", 1.0),
        ("", "abc", 0.0),
        ("abc", "abc", 1.0),
    ],
)
def test_edit_similarity(prediction: str, target: str, expected: float) -> None:
    assert edit_similarity(prediction, target) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("prediction", "target", "expected"),
    [
        # Orders 1..3 (the target has 3 characters). n=1: P=2/2, R=2/3, F2=5·(2/3)/(4+2/3)=5/7;
        # n=2: P=1/1, R=1/2, F2=2.5/4.5=5/9; n=3: the prediction has no 3-gram, F=0.
        ("ab", "abc", (5 / 7 + 5 / 9 + 0) / 3),
        # Orders 1..2. n=1: clipped match 1 of {a:2} vs {a:1}: P=1/2, R=1, F2=2.5/3; n=2: 0.
        ("aa", "a", (2.5 / 3 + 0) / 2),
        # Orders 1..6 of 6-character texts, nothing in common.
        ("abcdef", "uvwxyz", 0.0),
        ("return x", "return x", 1.0),
        ("", "", 1.0),
        ("x", "", 0.0),
        ("", "x", 0.0),
    ],
)
def test_chrf(prediction: str, target: str, expected: float) -> None:
    assert chrf(prediction, target) == pytest.approx(expected, abs=1e-9)


def test_chrf_beta_and_order_are_parameters() -> None:
    # β = 1: n=1 F1 = 2·(2/3)/(5/3) = 0.8; n=2 F1 = 1/1.5 = 2/3; n=3: 0.
    assert chrf("ab", "abc", beta=1.0) == pytest.approx((0.8 + 2 / 3) / 3, abs=1e-9)
    # Only unigrams: 5/7.
    assert chrf("ab", "abc", max_order=1) == pytest.approx(5 / 7, abs=1e-9)


def test_chrf_penalises_a_truncated_completion_more_than_a_longer_close_one() -> None:
    target = "result = compute(values)"
    assert chrf("result", target) < chrf("result = compute(value)", target) < 1.0


def test_score_bundles_every_metric() -> None:
    scores = score("  total = a + b\n", "total = a + b")
    assert not scores.exact
    assert scores.exact_stripped
    assert scores.edit_similarity == pytest.approx(1 - 3 / 16, abs=1e-9)
    assert 0 < scores.chrf < 1
    assert score("x", "x").exact
