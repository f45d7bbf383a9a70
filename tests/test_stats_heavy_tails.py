"""Seeded A/A and A/B simulations on heavy-tailed, user-clustered fleets (simulator.heavy_tails).

Gamma-Poisson activity and Beta propensities give a few very heavy users. gbstats' test on such
data rejects a true null too often at small sizes; the analysis's defaults (each user's
contribution capped at the pooled p95, the small-sample correction, rows under
``MIN_EFFECTIVE_USERS`` effective users per arm never judged) must keep every simulated primary
metric's false-positive rate within 4-6 % and the 95 % CI's coverage within 94-96 % from 100
users per arm up (% of code written sits at the upper edge: 0.060 at 100 users per arm with
this seed, 0.061 in bench/stats_calibration.py's). Fixed seeds: each assertion always passes or
always fails.
"""

from __future__ import annotations

import functools

import pytest

from experiments.analysis.analyze import MIN_EFFECTIVE_USERS
from experiments.definitions.capping import DEFAULT_CAPPING
from simulator.heavy_tails import SIMULATED_METRICS, rates, simulate_comparisons

SEED = 20261201
EXPERIMENTS = {100: 4000, 200: 4000, 1000: 1000}


@functools.cache
def _aa(users: int) -> dict[str, dict[str, float]]:
    found = simulate_comparisons(users, EXPERIMENTS[users], DEFAULT_CAPPING.percentile, SEED)
    return rates(found, MIN_EFFECTIVE_USERS)


@pytest.mark.parametrize(
    ("users", "metric"), [(users, metric) for users in EXPERIMENTS for metric in SIMULATED_METRICS]
)
def test_aa_false_positives_and_coverage_with_capping(users: int, metric: str) -> None:
    row = _aa(users)[metric]
    assert 0.04 <= row["rejection_rate"] <= 0.06, row
    assert 0.94 <= row["coverage"] <= 0.96, row


def test_coverage_of_a_true_effect() -> None:
    found = simulate_comparisons(200, 2000, DEFAULT_CAPPING.percentile, SEED + 1, lift=0.05)
    row = rates(found, MIN_EFFECTIVE_USERS)["acceptance_rate"]
    assert 0.94 <= row["coverage"] <= 0.96, row


def test_uncapped_test_is_too_liberal_on_small_heavy_tailed_arms() -> None:
    # What the defaults fix: gbstats' test as is, at 50 users per arm.
    table = rates(simulate_comparisons(50, 2000, None, SEED + 2))
    assert max(row["rejection_rate"] for row in table.values()) > 0.07, table
