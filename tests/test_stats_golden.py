"""Golden values: figures published in GrowthBook's gbstats 0.8.0 test suite, at abs=1e-5.

The last block holds figures this suite computed with gbstats 0.8.0 during development (the
sequential interval and CUPED on a mean metric), to pin the conventions beyond the published set.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from experiments.analysis.stats import ResultCode, compare, srm_p_value
from experiments.analysis.stats.moments import CupedMeanMoments, MeanMoments, RatioMoments

MEAN_A = MeanMoments(n=3407, sum=1396.87, sum_squares=52377.9767)
MEAN_B = MeanMoments(n=3461, sum=2422.7, sum_squares=134698.29)
RATIO_A = RatioMoments(
    n=100, m_sum=270, m_sum_squares=848.79, d_sum=510, d_sum_squares=810, md_sum=-900
)
RATIO_B = RatioMoments(
    n=120, m_sum=300, m_sum_squares=869, d_sum=500, d_sum_squares=800, md_sum=-905
)


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("lift_rel", 0.70732),
        ("ci_rel", (-0.03526, 1.44989)),
        ("p_rel", 0.06191),
        ("lift_abs", 0.29),
        ("ci_abs", (0.04538, 0.53462)),
        ("p_abs", 0.02016),
    ],
)
def test_mean_metric(field: str, expected: float | tuple[float, float]) -> None:
    result = compare(MEAN_A, MEAN_B)
    assert result.code is ResultCode.OK
    assert getattr(result, field) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    ("field", "expected"),
    [("lift_rel", 0.06667), ("ci_rel", (-0.47767, 0.61101)), ("p_rel", 0.80707)],
)
def test_proportion(field: str, expected: float | tuple[float, float]) -> None:
    # A proportion is a mean metric with Σm = Σm² = successes and the binomial variance p(1 − p).
    result = compare(MeanMoments(28, 14, 14), MeanMoments(30, 16, 16), proportion=True)
    assert getattr(result, field) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("control_mean", 0.529411765),
        ("treatment_mean", 0.6),
        ("lift_rel", 0.133333333),
        ("p_rel", 0.610663339),
    ],
)
def test_ratio_metric(field: str, expected: float) -> None:
    result = compare(RATIO_A, RATIO_B)
    assert result.code is ResultCode.OK
    assert getattr(result, field) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    ("observed", "weights", "expected"),
    [
        ([1000, 1200], [0.5, 0.5], 0.000020079),
        ([135, 115], [0.5, 0.5], 0.205903211),
        ([310, 98], [0.75, 0.25], 0.647434186),
        ([500, 500, 600], [0.34, 0.33, 0.33], 0.000592638),
    ],
)
def test_srm(observed: Sequence[int], weights: Sequence[float], expected: float) -> None:
    assert srm_p_value(observed, weights) == pytest.approx(expected, abs=1e-5)


def test_ratio_interval_matches_gbstats() -> None:
    assert compare(RATIO_A, RATIO_B).ci_rel == pytest.approx((-0.38208, 0.64874), abs=1e-5)


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("seq_ci_rel", (-0.44442, 1.85906)),
        ("seq_p_rel", 0.69867),
    ],
)
def test_sequential_matches_gbstats(field: str, expected: float | tuple[float, float]) -> None:
    result = compare(MEAN_A, MEAN_B, sequential=True, n_star=5000)
    assert getattr(result, field) == pytest.approx(expected, abs=1e-5)


CUPED_A = CupedMeanMoments(3407, 1396.87, 52377.9767, 1200.0, 45000.0, 42000.0)
CUPED_B = CupedMeanMoments(3461, 2422.7, 134698.29, 1250.0, 46000.0, 60000.0)


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("lift_rel", 0.68294),
        ("ci_rel", (0.24178, 1.12410)),
        ("p_rel", 0.00242),
        ("lift_abs", 0.28000),
        ("ci_abs", (0.12703, 0.43298)),
        ("p_abs", 0.00034),
    ],
)
def test_cuped_mean_matches_gbstats(field: str, expected: float | tuple[float, float]) -> None:
    result = compare(CUPED_A, CUPED_B)
    assert result.cuped_applied
    assert getattr(result, field) == pytest.approx(expected, abs=1e-5)
