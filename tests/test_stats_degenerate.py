"""Degenerate inputs give a result code: never NaN, never an exception, never a warning."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.analysis.stats import ResultCode, compare, non_inferiority, srm_p_value
from experiments.analysis.stats.moments import (
    CupedMeanMoments,
    CupedRatioMoments,
    MeanMoments,
    Moments,
    RatioMoments,
)

GOOD_MEAN = MeanMoments(n=10, sum=5.0, sum_squares=4.0)
GOOD_RATIO = RatioMoments(
    n=10, m_sum=5.0, m_sum_squares=4.0, d_sum=20.0, d_sum_squares=50.0, md_sum=11.0
)


def _finite(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    return True


def _assert_clean(result: dict[str, object]) -> None:
    assert all(_finite(v) for v in result.values()), result


@pytest.mark.parametrize(
    ("control", "treatment", "code"),
    [
        (MeanMoments(0, 0.0, 0.0), GOOD_MEAN, ResultCode.NO_USERS),
        (GOOD_MEAN, MeanMoments(0, 0.0, 0.0), ResultCode.NO_USERS),
        (MeanMoments(1, 3.0, 9.0), GOOD_MEAN, ResultCode.TOO_FEW_USERS),
        (GOOD_MEAN, MeanMoments(1, 3.0, 9.0), ResultCode.TOO_FEW_USERS),
        # Every user has the value 0.3, in both arms (Σm² carries rounding noise).
        (MeanMoments(10, 3.0, 0.9), MeanMoments(7, 2.1, 0.63), ResultCode.ZERO_VARIANCE),
        (MeanMoments(10, 0.0, 0.0), GOOD_MEAN, ResultCode.ZERO_BASELINE),
        (RatioMoments(5, 0.0, 0.0, 0.0, 0.0, 0.0), GOOD_RATIO, ResultCode.ZERO_DENOMINATOR),
        (GOOD_RATIO, RatioMoments(5, 0.0, 0.0, 0.0, 0.0, 0.0), ResultCode.ZERO_DENOMINATOR),
        # Every user accepts exactly half of 4 suggestions, in both arms: m = d / 2.
        (
            RatioMoments(8, 16.0, 32.0, 32.0, 128.0, 64.0),
            RatioMoments(6, 12.0, 24.0, 24.0, 96.0, 48.0),
            ResultCode.ZERO_VARIANCE,
        ),
        (RatioMoments(10, 0.0, 0.0, 20.0, 50.0, 0.0), GOOD_RATIO, ResultCode.ZERO_BASELINE),
    ],
)
def test_codes(control: Moments, treatment: Moments, code: ResultCode) -> None:
    result = compare(control, treatment, sequential=True)
    assert result.code is code
    _assert_clean(result.to_dict())
    if code is not ResultCode.ZERO_BASELINE:
        assert result.p_rel is None and result.ci_rel is None and result.seq_p_rel is None
    assert result.p_abs is None or code is ResultCode.ZERO_BASELINE


def test_zero_baseline_keeps_the_absolute_test() -> None:
    result = compare(MeanMoments(10, 0.0, 0.0), GOOD_MEAN, sequential=True)
    assert result.code is ResultCode.ZERO_BASELINE
    assert result.lift_abs == pytest.approx(0.5)
    assert result.p_abs is not None and result.ci_abs is not None
    assert result.seq_p_abs is not None and result.chance_to_win is not None
    assert result.lift_rel is None and result.p_rel is None


def test_treatment_constant_zero_keeps_the_absolute_test() -> None:
    # μt = 0 and vt = 0: the delta-method relative variance is 0, the absolute test still works.
    result = compare(GOOD_MEAN, MeanMoments(10, 0.0, 0.0))
    assert result.code is ResultCode.ZERO_VARIANCE
    assert result.lift_rel == pytest.approx(-1.0)
    assert result.p_rel is None
    assert result.p_abs is not None and result.p_abs < 0.05


def test_one_constant_arm_is_still_tested() -> None:
    result = compare(MeanMoments(10, 3.0, 0.9), GOOD_MEAN)
    assert result.code is ResultCode.OK
    # Welch dof falls back to the varying arm's n − 1.
    assert result.dof == pytest.approx(9.0)


def test_mixed_moment_types_are_a_programming_error() -> None:
    with pytest.raises(TypeError):
        compare(GOOD_MEAN, GOOD_RATIO)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1])
def test_alpha_out_of_range_is_rejected(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha"):
        compare(GOOD_MEAN, GOOD_MEAN, alpha=alpha)


def test_cuped_without_pre_period_variance_falls_back() -> None:
    # Every user is new: the pre-period is all zeros, so there is nothing to regress on.
    control = CupedMeanMoments(10, 5.0, 4.0, 0.0, 0.0, 0.0)
    treatment = CupedMeanMoments(12, 7.0, 6.0, 0.0, 0.0, 0.0)
    adjusted = compare(control, treatment)
    plain = compare(MeanMoments(10, 5.0, 4.0), MeanMoments(12, 7.0, 6.0))
    assert not adjusted.cuped_applied and adjusted.variance_reduction is None
    assert adjusted.p_rel == plain.p_rel and adjusted.ci_abs == plain.ci_abs


def test_cuped_ratio_without_pre_denominator_falls_back() -> None:
    zeros = (0.0,) * 14
    control = CupedRatioMoments(10, 5.0, 4.0, 20.0, 50.0, *zeros[:4], 11.0, *zeros[:5])
    treatment = CupedRatioMoments(10, 6.0, 5.0, 20.0, 50.0, *zeros[:4], 13.0, *zeros[:5])
    result = compare(control, treatment)
    assert result.code is ResultCode.OK and not result.cuped_applied


def test_cuped_turned_off_uses_the_post_period() -> None:
    control = CupedMeanMoments(3407, 1396.87, 52377.9767, 1200.0, 45000.0, 42000.0)
    treatment = CupedMeanMoments(3461, 2422.7, 134698.29, 1250.0, 46000.0, 60000.0)
    result = compare(control, treatment, cuped=False)
    assert not result.cuped_applied
    assert result.p_rel == pytest.approx(0.06191, abs=1e-5)


@pytest.mark.parametrize(
    ("control", "code"),
    [
        (MeanMoments(0, 0.0, 0.0), ResultCode.NO_USERS),
        (MeanMoments(10, 0.0, 0.0), ResultCode.ZERO_BASELINE),
    ],
)
def test_non_inferiority_codes(control: MeanMoments, code: ResultCode) -> None:
    result = non_inferiority(control, GOOD_MEAN, margin=0.05, higher_is_better=True)
    assert result.code is code and not result.non_inferior and result.p_value is None
    _assert_clean(result.to_dict())


def test_srm_without_users_is_not_a_mismatch() -> None:
    assert srm_p_value([0, 0], [0.5, 0.5]) == 1.0


@pytest.mark.parametrize(
    ("observed", "weights"),
    [([10], [1.0]), ([10, 10], [0.5]), ([10, -1], [0.5, 0.5]), ([10, 10], [0.0, 0.0])],
)
def test_srm_rejects_bad_input(observed: list[int], weights: list[float]) -> None:
    with pytest.raises(ValueError):
        srm_p_value(observed, weights)


_COUNTS = st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), max_size=8)
# Values with two decimals, as latencies or scores come; sums of them carry rounding noise.
_VALUES = st.lists(st.integers(-100_000, 100_000).map(lambda cents: cents / 100), max_size=8)


def _ratio_of(rows: list[tuple[int, int]]) -> RatioMoments:
    m = [float(a) for a, _ in rows]
    d = [float(b) for _, b in rows]
    return RatioMoments(
        len(rows),
        sum(m),
        sum(x * x for x in m),
        sum(d),
        sum(x * x for x in d),
        sum(x * y for x, y in zip(m, d, strict=True)),
    )


def _mean_of(values: list[float]) -> MeanMoments:
    return MeanMoments(len(values), sum(values), sum(x * x for x in values))


@settings(max_examples=300, deadline=None)
@given(control=_COUNTS, treatment=_COUNTS)
def test_any_ratio_data_gives_finite_results_or_a_code(
    control: list[tuple[int, int]], treatment: list[tuple[int, int]]
) -> None:
    c, t = _ratio_of(control), _ratio_of(treatment)
    _assert_clean(compare(c, t, sequential=True).to_dict())
    for sequential in (False, True):
        guard = non_inferiority(c, t, margin=0.05, higher_is_better=False, sequential=sequential)
        _assert_clean(guard.to_dict())


@settings(max_examples=300, deadline=None)
@given(control=_VALUES, treatment=_VALUES)
def test_any_mean_data_gives_finite_results_or_a_code(
    control: list[float], treatment: list[float]
) -> None:
    c, t = _mean_of(control), _mean_of(treatment)
    result = compare(c, t, sequential=True)
    _assert_clean(result.to_dict())
    if result.code is ResultCode.OK:
        assert result.p_rel is not None and 0.0 <= result.p_rel <= 1.0
    _assert_clean(non_inferiority(c, t, margin=0.05, higher_is_better=True).to_dict())
