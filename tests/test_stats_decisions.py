"""Non-inferiority, chance to win, the sequential interval, and serialisation: sanity checks."""

from __future__ import annotations

import json

import pytest

from experiments.analysis.stats import ResultCode, chance_to_win, compare, non_inferiority
from experiments.analysis.stats.moments import MeanMoments

MEAN_A = MeanMoments(n=3407, sum=1396.87, sum_squares=52377.9767)
MEAN_B = MeanMoments(n=3461, sum=2422.7, sum_squares=134698.29)


def _arm(mean: float, n: int, variance: float = 1.0) -> MeanMoments:
    return MeanMoments(n, n * mean, (n - 1) * variance + n * mean * mean)


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_equal_arms_are_non_inferior_with_enough_users(higher_is_better: bool) -> None:
    arm = _arm(10.0, 5000)
    result = non_inferiority(arm, arm, margin=0.02, higher_is_better=higher_is_better)
    assert result.code is ResultCode.OK and result.non_inferior
    assert result.p_value is not None and result.p_value < 0.05


@pytest.mark.parametrize(
    ("treatment_mean", "higher_is_better", "non_inferior"),
    [
        (9.0, True, False),  # 10 % worse where higher is better
        (11.0, True, True),  # 10 % better
        (11.0, False, False),  # 10 % worse where lower is better (e.g. latency)
        (9.0, False, True),
    ],
)
def test_direction_follows_the_metric(
    treatment_mean: float, higher_is_better: bool, non_inferior: bool
) -> None:
    result = non_inferiority(
        _arm(10.0, 5000),
        _arm(treatment_mean, 5000),
        margin=0.05,
        higher_is_better=higher_is_better,
    )
    assert result.non_inferior is non_inferior
    assert result.bound is not None
    if higher_is_better:
        assert (result.bound > -0.05) is non_inferior
    else:
        assert (result.bound < 0.05) is non_inferior


@pytest.mark.parametrize("higher_is_better", [True, False])
@pytest.mark.parametrize("sequential", [True, False])
def test_non_inferior_exactly_when_the_bound_clears_the_margin(
    higher_is_better: bool, sequential: bool
) -> None:
    for treatment_mean in (9.0, 9.5, 9.7, 9.9, 10.0, 10.1, 10.3, 10.5, 11.0):
        result = non_inferiority(
            _arm(10.0, 3000, variance=25.0),
            _arm(treatment_mean, 3000, variance=25.0),
            margin=0.03,
            higher_is_better=higher_is_better,
            sequential=sequential,
        )
        assert result.bound is not None and result.p_value is not None
        clears = result.bound > -0.03 if higher_is_better else result.bound < 0.03
        assert result.non_inferior is clears is (result.p_value < 0.05)


def test_sequential_non_inferiority_is_more_demanding() -> None:
    control, treatment = _arm(10.0, 3000, variance=25.0), _arm(10.1, 3000, variance=25.0)
    fixed = non_inferiority(control, treatment, margin=0.03, higher_is_better=True)
    always_valid = non_inferiority(
        control, treatment, margin=0.03, higher_is_better=True, sequential=True
    )
    assert fixed.bound is not None and always_valid.bound is not None
    assert always_valid.bound < fixed.bound
    assert fixed.p_value is not None and always_valid.p_value is not None
    assert always_valid.p_value > fixed.p_value


def test_zero_margin_is_the_one_sided_t_test() -> None:
    result = non_inferiority(MEAN_A, MEAN_B, margin=0.0, higher_is_better=True)
    two_sided = compare(MEAN_A, MEAN_B)
    ninety = compare(MEAN_A, MEAN_B, alpha=0.10)
    assert two_sided.p_rel is not None and ninety.ci_rel is not None
    assert result.p_value == pytest.approx(two_sided.p_rel / 2, abs=1e-12)
    assert result.bound == pytest.approx(ninety.ci_rel[0], abs=1e-12)


def test_chance_to_win_of_equal_arms_is_one_half() -> None:
    arm = _arm(3.0, 100)
    assert compare(arm, arm).chance_to_win == pytest.approx(0.5)
    assert chance_to_win(0.0, 0.0) == 0.5


def test_chance_to_win_of_a_clear_win() -> None:
    control, treatment = _arm(10.0, 5000), _arm(10.5, 5000)
    win = compare(control, treatment).chance_to_win
    assert win is not None and win > 0.999
    loss = compare(control, treatment, higher_is_better=False).chance_to_win
    assert loss is not None and loss == pytest.approx(1.0 - win)


def test_chance_to_win_is_normal_on_the_relative_lift() -> None:
    # Φ(0.707317 / 0.378794) on gbstats 0.8.0's published mean example, its flat-prior Gaussian.
    assert compare(MEAN_A, MEAN_B).chance_to_win == pytest.approx(0.96907, abs=1e-5)
    absolute = compare(MEAN_A, MEAN_B, relative=False).chance_to_win
    assert absolute == pytest.approx(chance_to_win(0.29, 0.1247836316), abs=1e-9)


def test_sequence_is_wider_than_the_fixed_interval() -> None:
    result = compare(MEAN_A, MEAN_B, sequential=True)
    assert result.ci_abs is not None and result.seq_ci_abs is not None
    assert result.seq_ci_abs[0] < result.ci_abs[0] and result.seq_ci_abs[1] > result.ci_abs[1]
    assert result.seq_p_abs is not None and result.p_abs is not None
    assert result.seq_p_abs > result.p_abs


def test_sequential_p_agrees_with_its_interval() -> None:
    for effect in (0.0, 0.05, 0.1, 0.2, 0.4):
        result = compare(_arm(1.0, 1000), _arm(1.0 + effect, 1000), sequential=True)
        assert result.seq_p_rel is not None and result.seq_ci_rel is not None
        excludes = result.seq_ci_rel[0] > 0 or result.seq_ci_rel[1] < 0
        assert excludes == (result.seq_p_rel < 0.05)


def test_results_serialise_to_json() -> None:
    result = compare(MEAN_A, MEAN_B, sequential=True)
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["code"] == "ok"
    assert payload["ci_rel"] == pytest.approx([-0.03526, 1.44989], abs=1e-5)
    guard = non_inferiority(MEAN_A, MEAN_B, margin=0.05, higher_is_better=True)
    assert json.loads(json.dumps(guard.to_dict()))["code"] == "ok"
