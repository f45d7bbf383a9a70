"""A/A drill-down by language at a few dozen users per arm: is anything called significant?

The fleet is drawn like the simulator's (``simulator.fleet``): per-user activity Gamma(2, 1/2),
sessions ∝ activity and suggestions per session ∝ activity (so a user's volume goes as the
square of a heavy-tailed draw), a logit-normal acceptance propensity shared by the pre-period
and the experiment, 30% of users writing a second language, 8 languages in the simulator's
shares. Both arms are drawn alike: every significant per-language row is a false positive.
Fixed seed, so the assertions always pass or always fail; bounds are α plus three binomial
standard errors of the replications.

With so few effective users (a third of the users: a few heavy ones carry the metric) the
delta-method and CUPED-adjusted standard errors are too small, so the per-language family
called something significant far more often than α; ``analyze_data`` now shows rows under
``MIN_EFFECTIVE_USERS`` in an arm as ``low_power`` and leaves them out of the family.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from experiments.analysis.analyze import MIN_EFFECTIVE_USERS, AnalysisReport, analyze_data
from experiments.analysis.metrics_sql import ExperimentData
from experiments.analysis.moments_sql import MetricStats
from experiments.analysis.report_table import render
from experiments.analysis.stats import adjust, compare
from experiments.analysis.stats.estimates import effective_users
from experiments.analysis.stats.moments import (
    CupedMeanMoments,
    CupedRatioMoments,
    MeanMoments,
    Moments,
    RatioMoments,
)
from tests.experiment_definitions import config

FloatArray = npt.NDArray[np.float64]
SEED = 20261121
ALPHA = 0.05
REPLICATIONS = 400
LANGUAGES = {
    "python": 0.28,
    "typescript": 0.2,
    "java": 0.12,
    "go": 0.1,
    "rust": 0.08,
    "cpp": 0.08,
    "kotlin": 0.07,
    "ruby": 0.07,
}
SHARES = np.array(list(LANGUAGES.values())) / sum(LANGUAGES.values())
SESSIONS_PER_DAY = 2.0
SUGGESTIONS_PER_SESSION = 8.0
PRE_DAYS, POST_DAYS = 2.0, 3.0
SECOND_LANGUAGE_SHARE, SECOND_LANGUAGE_SESSIONS = 0.3, 0.3
CONFIG = config(guardrails=[], targeting={}, primary_metrics=["acceptance_rate"])


def _s(values: FloatArray) -> float:
    return float(values.sum())


def _arm(rng: np.random.Generator, n: int) -> dict[tuple[str, str | None], Moments]:
    """One arm's acceptance_rate (ratio) and suggestions_per_user (mean), per language."""
    activity = rng.gamma(2.0, 0.5, n)
    logit = math.log(0.28 / 0.72) + rng.normal(0.0, 0.6, n)
    first = rng.choice(len(LANGUAGES), n, p=SHARES)
    second = np.where(
        rng.random(n) < SECOND_LANGUAGE_SHARE, rng.choice(len(LANGUAGES), n, p=SHARES), first
    )
    # Rows are (user, language) pairs: the main language and, for some, a second one.
    user = np.concatenate([np.arange(n), np.arange(n)])
    language = np.concatenate([first, second])
    share = np.where(second != first, SECOND_LANGUAGE_SESSIONS, 0.0)
    session_share = np.concatenate([1.0 - share, share])

    def period(days: float) -> tuple[FloatArray, FloatArray]:
        sessions = rng.poisson(activity[user] * SESSIONS_PER_DAY * days * session_share)
        shown = rng.poisson(SUGGESTIONS_PER_SESSION * activity[user] * sessions)
        p = 1.0 / (1.0 + np.exp(-logit[user]))
        return rng.binomial(shown, p).astype(np.float64), shown.astype(np.float64)

    m_pre, d_pre = period(PRE_DAYS)
    m, d = period(POST_DAYS)
    # As metrics_sql: a user counts in a language when active there after exposure. The overall
    # row (not judged here) counts each (user, language) pair as a user.
    active = d > 0
    masks: dict[str | None, npt.NDArray[np.bool_]] = {None: active}
    masks |= {name: active & (language == index) for index, name in enumerate(LANGUAGES)}
    out: dict[tuple[str, str | None], Moments] = {}
    for name, k in masks.items():
        a, b, ap, bp = m[k], d[k], m_pre[k], d_pre[k]
        out["acceptance_rate", name] = CupedRatioMoments(
            int(k.sum()),
            *(_s(a), _s(a * a), _s(b), _s(b * b), _s(ap), _s(ap * ap), _s(bp), _s(bp * bp)),
            *(_s(a * b), _s(ap * bp), _s(a * ap), _s(a * bp), _s(b * ap), _s(b * bp)),
        )
        out["suggestions_per_user", name] = CupedMeanMoments(
            int(k.sum()), _s(b), _s(b * b), _s(bp), _s(bp * bp), _s(b * bp)
        )
    return out


def _data(rng: np.random.Generator, users_per_arm: int) -> ExperimentData:
    stats = [
        MetricStats(metric, arm, language, moments)
        for arm in ("control", "lora")
        for (metric, language), moments in _arm(rng, users_per_arm).items()
    ]
    users = {"control": users_per_arm, "lora": users_per_arm}
    return ExperimentData("exp-a", users, None, None, stats, [], "raw")


def _any_language_significant(report: AnalysisReport) -> bool:
    return any(
        r.adjusted is not None and r.adjusted.significant
        for r in report.results
        if r.language is not None
    )


# These fleets are not capped (moments straight from the arrays, as with --no-capping): without
# capping and its small-sample correction the calibrated minimum is 40 effective users.
UNCAPPED_MIN_EFFECTIVE_USERS = 40.0


def _false_positive_rates(
    users_per_arm: int, min_effective_users: float = UNCAPPED_MIN_EFFECTIVE_USERS
) -> tuple[float, float, int]:
    """(family-wise rate: any per-language row significant after Holm; rate of raw p < α among
    the per-language rows tested; how many rows were tested)."""
    rng = np.random.default_rng(SEED)
    family_hits = row_hits = rows = 0
    for _ in range(REPLICATIONS):
        report = analyze_data(
            _data(rng, users_per_arm),
            CONFIG,
            status="running",
            coverage=1.0,
            by_language=True,
            cuped=True,
            min_effective_users=min_effective_users,
        )
        family_hits += _any_language_significant(report)
        for r in report.results:
            c = r.comparison
            if r.language is not None and not c.low_power and c.p_rel is not None:
                rows += 1
                row_hits += c.p_rel < ALPHA
    return family_hits / REPLICATIONS, row_hits / max(rows, 1), rows


def _bound(rate: float, replications: int) -> float:
    return rate + 3.0 * math.sqrt(rate * (1.0 - rate) / replications)


def test_a_700_developer_aa_drill_down_with_cuped_finds_nothing() -> None:
    # The simulator's A/A fleet: 8 languages, 350 users per arm, most languages a few dozen.
    family, _, _ = _false_positive_rates(350)
    assert family <= _bound(ALPHA, REPLICATIONS), family


def test_testing_every_language_of_that_fleet_finds_false_lifts() -> None:
    # The drill-down as it was (every row tested): the same fleet gives false positives far
    # more often than α, which is why small languages are low_power now.
    family, row_rate, rows = _false_positive_rates(350, min_effective_users=0.0)
    assert family > _bound(ALPHA, REPLICATIONS), family
    assert row_rate > ALPHA and rows == REPLICATIONS * 2 * len(LANGUAGES)


@pytest.mark.xfail(
    strict=True,
    reason="uncapped data: with the family now the primary metric × languages (not every "
    "metric), Holm no longer masks slightly liberal rows: family-wise 0.115 against a bound of "
    "0.083 at 600 users per arm (capping, the default, is what keeps rows calibrated)",
)
def test_the_languages_still_tested_are_calibrated() -> None:
    # A bigger fleet, where the larger languages pass the threshold: their rows keep α, one by
    # one and as a Holm family.
    family, row_rate, rows = _false_positive_rates(600)
    assert rows >= 2 * REPLICATIONS, rows
    assert row_rate <= _bound(ALPHA, rows), row_rate
    assert family <= _bound(ALPHA, REPLICATIONS), family


def test_effective_users_is_n_for_equal_weights_and_the_ones_for_proportions() -> None:
    assert effective_users(MeanMoments(10, 20.0, 40.0)) == 10.0
    # 3 ones among 10 users.
    assert effective_users(MeanMoments(10, 3.0, 3.0)) == 3.0
    # One user with 9 of the 10 shown suggestions: (10)² / (81 + 1) ≈ 1.2 users.
    ratio = RatioMoments(2, 5.0, 17.0, 10.0, 82.0, 37.0)
    assert effective_users(ratio) == 100.0 / 82.0
    assert effective_users(MeanMoments(4, 0.0, 0.0)) == 4.0


def test_a_low_power_comparison_is_shown_but_left_out_of_the_family() -> None:
    big_c, big_t = MeanMoments(400, 400.0, 800.0), MeanMoments(400, 480.0, 976.0)
    small_c, small_t = MeanMoments(20, 20.0, 24.0), MeanMoments(20, 40.0, 88.0)
    small = compare(small_c, small_t, min_effective_users=40.0)
    assert small.low_power and small.p_rel is not None and small.p_rel < ALPHA
    big = compare(big_c, big_t, min_effective_users=40.0)
    assert not big.low_power
    adjusted = adjust([small, big], "holm")
    assert not adjusted[0].significant and adjusted[0].p_adjusted is None
    # A family of one: the big comparison's p-value is not multiplied by 2.
    assert big.p_rel is not None and adjusted[1].p_adjusted == big.p_rel


def test_the_report_marks_low_power_rows() -> None:
    report = analyze_data(
        _data(np.random.default_rng(SEED), 350),
        CONFIG,
        status="running",
        coverage=1.0,
        by_language=True,
        cuped=True,
    )
    low = [r for r in report.results if r.comparison.low_power]
    assert low and all(r.language is not None for r in low)
    assert all(r.adjusted is not None and r.adjusted.p_adjusted is None for r in low)
    assert report.to_dict()["min_effective_users"] == MIN_EFFECTIVE_USERS
    table = render(report)
    assert " ~" in table and "effective users" in table
