"""Holm and Benjamini–Hochberg: hand-computed examples, and CIs that agree with the decisions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.analysis.stats import (
    Comparison,
    Correction,
    ResultCode,
    adjust,
    adjust_p_values,
    ci_levels,
    compare,
)
from experiments.analysis.stats.moments import MeanMoments

# Sorted: 0.005 (#3), 0.01 (#0), 0.03 (#2), 0.04 (#1); m = 4.
P_VALUES = [0.01, 0.04, 0.03, 0.005]


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        # Holm: running max of (4, 3, 2, 1)·p = 0.02, 0.03, 0.06, max(0.06, 0.04).
        (Correction.HOLM, [0.03, 0.06, 0.06, 0.02]),
        # BH: running min from the top of 4·p/rank = 0.02, 0.02, 0.04, 0.04.
        (Correction.BH, [0.02, 0.04, 0.04, 0.02]),
    ],
)
def test_adjusted_p_values(method: Correction, expected: list[float]) -> None:
    assert adjust_p_values(P_VALUES, method) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        # Holm rejects #3 and #0 (steps 1–2, at α/4 and α/3); the rest get α/(4 − 2).
        (Correction.HOLM, [0.05 / 3, 0.025, 0.025, 0.0125]),
        # BH selects all four: every CI at 4·α/4.
        (Correction.BH, [0.05] * 4),
    ],
)
def test_ci_levels(method: Correction, expected: list[float]) -> None:
    assert ci_levels(P_VALUES, method, 0.05) == pytest.approx(expected, abs=1e-12)


def test_bh_with_nothing_selected_uses_bonferroni_level() -> None:
    assert ci_levels([0.2, 0.5], "bh", 0.05) == pytest.approx([0.025, 0.025])


def test_a_family_of_one_is_unadjusted() -> None:
    for method in Correction:
        assert adjust_p_values([0.03], method) == [0.03]
        assert ci_levels([0.03], method, 0.05) == [0.05]


def test_holm_is_clipped_at_one() -> None:
    assert adjust_p_values([0.6, 0.7], "holm") == [1.0, 1.0]


def test_bad_p_values_are_rejected() -> None:
    with pytest.raises(ValueError):
        adjust_p_values([1.5], "holm")
    with pytest.raises(ValueError):
        adjust_p_values([0.1], "bonferroni")


def _comparison(effect: float, n: int, sequential: bool) -> Comparison:
    # Control mean 1, treatment mean 1 + effect, unit variance in both arms.
    def arm(mean: float) -> MeanMoments:
        return MeanMoments(n, n * mean, (n - 1) * 1.0 + n * mean * mean)

    return compare(arm(1.0), arm(1.0 + effect), sequential=sequential)


def _excludes_zero(ci: tuple[float, float] | None) -> bool:
    assert ci is not None
    return ci[0] > 0.0 or ci[1] < 0.0


@settings(max_examples=150, deadline=None)
@given(
    family=st.lists(st.tuples(st.floats(-0.6, 0.6), st.integers(10, 400)), min_size=1, max_size=12),
    method=st.sampled_from(Correction),
    relative=st.booleans(),
    sequential=st.booleans(),
)
def test_adjusted_ci_agrees_with_adjusted_p(
    family: list[tuple[float, int]], method: Correction, relative: bool, sequential: bool
) -> None:
    comparisons = [_comparison(effect, n, sequential) for effect, n in family]
    results = adjust(comparisons, method, relative=relative, sequential=sequential)
    for result in results:
        assert result.p_adjusted is not None
        assert result.significant == (result.p_adjusted < 0.05)
        assert result.significant == _excludes_zero(result.ci)


def test_adjusted_cis_are_never_narrower() -> None:
    comparisons = [_comparison(effect, 200, False) for effect in (0.05, 0.2, 0.3, 0.5)]
    for method in Correction:
        for result in adjust(comparisons, method):
            raw = result.comparison.ci_rel
            assert raw is not None and result.ci is not None
            assert result.ci[0] <= raw[0] + 1e-12 and result.ci[1] >= raw[1] - 1e-12


def test_comparisons_without_a_test_stay_out_of_the_family() -> None:
    degenerate = compare(MeanMoments(0, 0.0, 0.0), MeanMoments(5, 5.0, 6.0))
    good = _comparison(0.3, 200, False)
    results = adjust([degenerate, good], "holm")
    assert degenerate.code is ResultCode.NO_USERS
    assert results[0].p_adjusted is None and not results[0].significant
    # A family of one: the good comparison is unadjusted.
    assert results[1].p_adjusted == good.p_rel
    assert results[1].ci == pytest.approx(good.ci_rel)
    assert isinstance(results[1].to_dict()["comparison"], dict)


def test_sequential_adjustment_needs_sequential_comparisons() -> None:
    # A comparison made without the sequence has no seq p-value: it is left out, not guessed.
    results = adjust([_comparison(0.3, 200, False)], "bh", sequential=True)
    assert results[0].p_adjusted is None
