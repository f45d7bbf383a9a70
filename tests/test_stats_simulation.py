"""Simulations with fixed seeds: error rates, coverage, peeking and CUPED, on user-level data.

Users are clustered: each has a propensity of their own and several suggestions, so
suggestions are not independent. Every simulation is deterministic (fixed seed), so each
assertion always passes or always fails; the bounds are those of the issue, chosen wide enough
(≥ 2 binomial standard errors of the rate) that a correct test passes with the chosen seed and
a wrong one (e.g. per-suggestion analysis) fails by a mile.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from experiments.analysis.stats import ResultCode, compare
from experiments.analysis.stats.moments import (
    CupedMeanMoments,
    CupedRatioMoments,
    MeanMoments,
    RatioMoments,
)

FloatArray = npt.NDArray[np.float64]
SEED = 20260421
ALPHA = 0.05


def _clustered_users(
    rng: np.random.Generator, shape: tuple[int, ...]
) -> tuple[FloatArray, FloatArray]:
    """Per user: accepted (m) and shown (d) suggestions, with per-user propensity and volume."""
    propensity = rng.beta(1.5, 2.5, size=shape)
    volume = rng.gamma(shape=1.0, scale=12.0, size=shape)
    shown = 1.0 + rng.poisson(volume).astype(np.float64)
    accepted = rng.binomial(shown.astype(np.int64), propensity).astype(np.float64)
    return accepted, shown


def _ratio_moments(m: FloatArray, d: FloatArray) -> RatioMoments:
    return RatioMoments(
        n=m.shape[-1],
        m_sum=float(m.sum()),
        m_sum_squares=float((m * m).sum()),
        d_sum=float(d.sum()),
        d_sum_squares=float((d * d).sum()),
        md_sum=float((m * d).sum()),
    )


def _contains(ci: tuple[float, float] | None, value: float) -> bool:
    assert ci is not None
    return ci[0] <= value <= ci[1]


AA_EXPERIMENTS = 2000
AA_USERS = 200


@pytest.fixture(scope="module")
def users() -> tuple[FloatArray, FloatArray]:
    """2,000 A/A experiments × 2 arms × 200 users."""
    rng = np.random.default_rng(SEED)
    return _clustered_users(rng, (AA_EXPERIMENTS, 2, AA_USERS))


class TestAA:
    """2,000 A/A experiments, 200 users per arm, acceptance rate (a ratio metric)."""

    EXPERIMENTS = AA_EXPERIMENTS

    def test_user_level_delta_method_holds_its_level(
        self, users: tuple[FloatArray, FloatArray]
    ) -> None:
        m, d = users
        rel_rejects = abs_rejects = rel_covers = abs_covers = 0
        for e in range(self.EXPERIMENTS):
            result = compare(_ratio_moments(m[e, 0], d[e, 0]), _ratio_moments(m[e, 1], d[e, 1]))
            assert result.code is ResultCode.OK
            assert result.p_rel is not None and result.p_abs is not None
            rel_rejects += result.p_rel < ALPHA
            abs_rejects += result.p_abs < ALPHA
            rel_covers += _contains(result.ci_rel, 0.0)
            abs_covers += _contains(result.ci_abs, 0.0)
        n = self.EXPERIMENTS
        assert 0.035 <= rel_rejects / n <= 0.065
        assert 0.035 <= abs_rejects / n <= 0.065
        assert 0.935 <= rel_covers / n <= 0.965
        assert 0.935 <= abs_covers / n <= 0.965

    def test_per_suggestion_analysis_is_badly_anti_conservative(
        self, users: tuple[FloatArray, FloatArray]
    ) -> None:
        # The mistake docs/statistics.md warns about: each suggestion as an independent trial.
        m, d = users
        accepted = m.sum(axis=2)
        shown = d.sum(axis=2)
        rejects = 0
        for e in range(self.EXPERIMENTS):
            control = MeanMoments(int(shown[e, 0]), accepted[e, 0], accepted[e, 0])
            treatment = MeanMoments(int(shown[e, 1]), accepted[e, 1], accepted[e, 1])
            result = compare(control, treatment, proportion=True)
            assert result.p_rel is not None
            rejects += result.p_rel < ALPHA
        assert rejects / self.EXPERIMENTS > 0.2


class TestPeeking:
    """1,000 A/A experiments, looked at 10 times as 100 more users per arm arrive."""

    EXPERIMENTS = 1000
    LOOKS = 10
    USERS_PER_LOOK = 100

    def test_sequential_test_keeps_alpha_under_peeking(
        self, looks: list[list[tuple[RatioMoments, RatioMoments]]]
    ) -> None:
        ever_seq = ever_fixed = 0
        for experiment in looks:
            seq_hit = fixed_hit = False
            for control, treatment in experiment:
                result = compare(control, treatment, sequential=True)
                assert result.seq_p_rel is not None and result.p_rel is not None
                seq_hit |= result.seq_p_rel < ALPHA
                fixed_hit |= result.p_rel < ALPHA
            ever_seq += seq_hit
            ever_fixed += fixed_hit
        assert ever_seq / self.EXPERIMENTS <= 0.05
        # The fixed-horizon test, peeked at 10 times, overshoots its 5 % well beyond chance.
        assert ever_fixed / self.EXPERIMENTS > 0.10


@pytest.fixture(scope="module")
def looks() -> list[list[tuple[RatioMoments, RatioMoments]]]:
    rng = np.random.default_rng(SEED + 1)
    m, d = _clustered_users(
        rng, (TestPeeking.EXPERIMENTS, 2, TestPeeking.LOOKS, TestPeeking.USERS_PER_LOOK)
    )
    # Cumulative sufficient statistics at each look, as the SQL would return them.
    sums = {
        "m": np.cumsum(m.sum(axis=3), axis=2),
        "mm": np.cumsum((m * m).sum(axis=3), axis=2),
        "d": np.cumsum(d.sum(axis=3), axis=2),
        "dd": np.cumsum((d * d).sum(axis=3), axis=2),
        "md": np.cumsum((m * d).sum(axis=3), axis=2),
    }

    def arm(e: int, a: int, look: int) -> RatioMoments:
        return RatioMoments(
            (look + 1) * TestPeeking.USERS_PER_LOOK,
            *(float(sums[k][e, a, look]) for k in ("m", "mm", "d", "dd", "md")),
        )

    return [
        [(arm(e, 0, look), arm(e, 1, look)) for look in range(TestPeeking.LOOKS)]
        for e in range(TestPeeking.EXPERIMENTS)
    ]


def _cuped_mean_arm(post: FloatArray, pre: FloatArray) -> CupedMeanMoments:
    return CupedMeanMoments(
        n=post.shape[-1],
        post_sum=float(post.sum()),
        post_sum_squares=float((post * post).sum()),
        pre_sum=float(pre.sum()),
        pre_sum_squares=float((pre * pre).sum()),
        post_pre_sum=float((post * pre).sum()),
    )


def _cuped_ratio_arm(
    m: FloatArray, d: FloatArray, mp: FloatArray, dp: FloatArray
) -> CupedRatioMoments:
    def s(x: FloatArray) -> float:
        return float(x.sum())

    return CupedRatioMoments(
        m.shape[-1],
        s(m), s(m * m), s(d), s(d * d),
        s(mp), s(mp * mp), s(dp), s(dp * dp),
        s(m * d), s(mp * dp), s(m * mp), s(m * dp), s(d * mp), s(d * dp),
    )  # fmt: skip


class TestCuped:
    """1,000 experiments with a true effect and a pre-period that predicts the metric."""

    EXPERIMENTS = 1000
    # 400 users per arm: at 200 the ratio's delta-method coverage sits at the bottom edge (0.936).
    USERS = 400

    def test_mean_metric(self) -> None:
        rng = np.random.default_rng(SEED + 2)
        shape = (self.EXPERIMENTS, 2, self.USERS)
        # A user's level persists between periods, so pre and post correlate (ρ ≈ 0.8).
        level = rng.normal(10.0, 2.0, size=shape)
        pre = level + rng.normal(0.0, 1.5, size=shape)
        post = level + rng.normal(0.0, 1.5, size=shape)
        effect = 0.2
        post[:, 1] += effect
        estimates, covered, reductions = [], 0, []
        for e in range(self.EXPERIMENTS):
            adjusted = compare(
                _cuped_mean_arm(post[e, 0], pre[e, 0]), _cuped_mean_arm(post[e, 1], pre[e, 1])
            )
            plain = compare(
                _cuped_mean_arm(post[e, 0], pre[e, 0]),
                _cuped_mean_arm(post[e, 1], pre[e, 1]),
                cuped=False,
            )
            assert adjusted.cuped_applied and adjusted.lift_abs is not None
            assert adjusted.se_abs is not None and plain.se_abs is not None
            assert adjusted.variance_reduction is not None
            assert adjusted.se_abs < plain.se_abs
            estimates.append(adjusted.lift_abs)
            reductions.append(adjusted.variance_reduction)
            covered += _contains(adjusted.ci_abs, effect)
        # Unbiased: the mean estimate is within 4 standard errors of the Monte-Carlo mean.
        spread = float(np.std(estimates)) / np.sqrt(self.EXPERIMENTS)
        assert abs(float(np.mean(estimates)) - effect) < 4 * spread
        assert 0.935 <= covered / self.EXPERIMENTS <= 0.965
        # Theory: the reduction is ρ², with ρ = 4 / (4 + 2.25) = 0.64, so about 0.41.
        assert float(np.mean(reductions)) == pytest.approx(0.41, abs=0.03)

    def test_ratio_metric(self) -> None:
        rng = np.random.default_rng(SEED + 3)
        shape = (self.EXPERIMENTS, 2, self.USERS)
        # Capped at 0.9 so that the 5 % lift keeps every propensity ≤ 1.
        propensity = 0.9 * rng.beta(1.5, 2.5, size=shape)
        volume = rng.gamma(shape=1.0, scale=12.0, size=shape)
        lift = 0.05
        post_propensity = propensity.copy()
        post_propensity[:, 1] *= 1.0 + lift
        dp = 1.0 + rng.poisson(volume).astype(np.float64)
        mp = rng.binomial(dp.astype(np.int64), propensity).astype(np.float64)
        d = 1.0 + rng.poisson(volume).astype(np.float64)
        m = rng.binomial(d.astype(np.int64), post_propensity).astype(np.float64)
        covered, reductions, estimates = 0, [], []
        for e in range(self.EXPERIMENTS):
            result = compare(
                _cuped_ratio_arm(m[e, 0], d[e, 0], mp[e, 0], dp[e, 0]),
                _cuped_ratio_arm(m[e, 1], d[e, 1], mp[e, 1], dp[e, 1]),
            )
            assert result.cuped_applied and result.variance_reduction is not None
            assert result.lift_rel is not None
            covered += _contains(result.ci_rel, lift)
            reductions.append(result.variance_reduction)
            estimates.append(result.lift_rel)
        spread = float(np.std(estimates)) / np.sqrt(self.EXPERIMENTS)
        assert abs(float(np.mean(estimates)) - lift) < 4 * spread
        assert 0.935 <= covered / self.EXPERIMENTS <= 0.965
        assert float(np.mean(reductions)) > 0.2
