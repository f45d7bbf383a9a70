"""Bucketing: frozen vectors, rejected input, properties (stickiness, uniformity, independence).

The statistical tests are deterministic: fixed user ids and seeds give the same statistic on every
run, so each either always passes or always fails; the critical values are χ² quantiles at
α = 0.001, stated where they are used (scipy is not a dependency).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.definitions.bucketing import (
    BUCKETING_VERSIONS,
    CURRENT_VERSION,
    arm_ranges,
    bucket,
    check_weights,
    choose_arm,
    in_range,
    layer_seed,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "bucketing_vectors.json").read_text(encoding="utf-8")
)
BUCKET_VECTORS: list[dict[str, Any]] = VECTORS["buckets"]
ARM_VECTORS: list[dict[str, Any]] = VECTORS["arms"]

N_USERS = 100_000
USERS = [f"user-{i}" for i in range(N_USERS)]

# χ² critical values at α = 0.001 (upper 0.1% quantiles): df=1 10.828, df=2 13.816,
# df=4 18.467, df=81 126.083, df=99 148.230.
CHI2_CRIT_DF1 = 10.828
CHI2_CRIT_DF2 = 13.816
CHI2_CRIT_DF4 = 18.467
CHI2_CRIT_DF81 = 126.083
CHI2_CRIT_DF99 = 148.230

# Property tests stay small so the module runs in a few seconds; no example database is kept.
PROPERTY = settings(max_examples=150, deadline=None, database=None)


def independent_bucket(seed: str, user_id: str) -> float:
    """Version 1 computed without the module: BLAKE2b-64 of "seed:user_id", big-endian / 2**64."""
    digest = hashlib.blake2b(f"{seed}:{user_id}".encode(), digest_size=8).digest()
    (value,) = struct.unpack(">Q", digest)
    return float(value) / 18446744073709551616.0


def vector_id(vector: dict[str, Any]) -> str:
    return f"{vector['seed'][:20]!r}:{vector['user_id'][:20]!r}"


# --- frozen vectors ---------------------------------------------------------------------------


def test_the_vector_file_is_varied_enough() -> None:
    assert len(BUCKET_VECTORS) >= 40
    assert {v["version"] for v in BUCKET_VECTORS} == {1}
    assert any(not v["user_id"] for v in BUCKET_VECTORS)
    assert any(not v["user_id"].isascii() for v in BUCKET_VECTORS)
    assert any(v["user_id"].lstrip("-").isdigit() for v in BUCKET_VECTORS)
    assert any(len(v["seed"]) >= 128 for v in BUCKET_VECTORS)
    assert any(len(v["user_id"]) >= 1000 for v in BUCKET_VECTORS)
    assert any(v["expected_arm"] is None for v in ARM_VECTORS)
    assert {v["coverage"] for v in ARM_VECTORS} >= {0.0, 1.0}


@pytest.mark.parametrize("vector", BUCKET_VECTORS, ids=vector_id)
def test_version_1_buckets_are_frozen(vector: dict[str, Any]) -> None:
    # Exact equality: JSON round-trips doubles, and any change to version 1 must fail here.
    assert bucket(vector["seed"], vector["user_id"], version=vector["version"]) == vector["bucket"]
    assert 0.0 <= vector["bucket"] < 1.0


@pytest.mark.parametrize("vector", BUCKET_VECTORS, ids=vector_id)
def test_vectors_agree_with_an_independent_computation(vector: dict[str, Any]) -> None:
    # Guards against the file having been generated from a broken implementation.
    assert independent_bucket(vector["seed"], vector["user_id"]) == vector["bucket"]


def test_version_1_is_current_and_the_default() -> None:
    assert CURRENT_VERSION == 1
    assert set(BUCKETING_VERSIONS) >= {1}
    vector = BUCKET_VECTORS[0]
    assert bucket(vector["seed"], vector["user_id"]) == vector["bucket"]


@pytest.mark.parametrize(
    "vector",
    ARM_VECTORS,
    ids=lambda v: f"{v['weights']}@{v['coverage']}:{v['position']}",
)
def test_arm_ranges_are_half_open(vector: dict[str, Any]) -> None:
    ranges = arm_ranges(vector["weights"], vector["coverage"])
    assert choose_arm(vector["position"], ranges) == vector["expected_arm"]
    for index, bounds in enumerate(ranges):
        assert in_range(vector["position"], bounds) is (index == vector["expected_arm"])


def test_arm_ranges_start_at_the_cumulative_weights() -> None:
    assert arm_ranges([0.25, 0.25, 0.5], 1.0) == [(0.0, 0.25), (0.25, 0.5), (0.5, 1.0)]
    assert arm_ranges([0.25, 0.25, 0.5], 0.5) == [(0.0, 0.125), (0.25, 0.375), (0.5, 0.75)]
    assert arm_ranges([0.5, 0.5], 0.0) == [(0.0, 0.0), (0.5, 0.5)]


def test_layer_seed_differs_from_any_experiment_key() -> None:
    # Experiment keys are slugs (no ':'), so a default experiment seed never equals a layer's.
    assert layer_seed("completion-model") == "layer:completion-model"
    assert layer_seed("completion-model") != "completion-model"


# --- rejected inputs --------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 2, -1, 99])
def test_unknown_version_is_rejected(version: int) -> None:
    with pytest.raises(ValueError, match=f"unknown bucketing version {version}"):
        bucket("seed", "user", version=version)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([0.5, 0.6], "must sum to 1, they sum to 1.1"),
        ([0.3, 0.3], "must sum to 1, they sum to 0.6"),
        ([0.25, 0.25, 0.25], "must sum to 1, they sum to 0.75"),
        ([1.0, 0.0], "must be positive numbers"),
        ([1.5, -0.5], "must be positive numbers"),
        ([0.5, math.nan], "must be positive numbers"),
        ([0.5, math.inf], "must be positive numbers"),
        ([], "at least one arm"),
    ],
)
def test_invalid_weights_are_rejected_not_repaired(weights: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_weights(weights)
    with pytest.raises(ValueError, match=message):
        arm_ranges(weights, 1.0)


def test_weights_within_rounding_of_one_are_accepted() -> None:
    check_weights([0.1] * 10)  # sums to 0.9999999999999999 left to right
    check_weights([1 / 3, 1 / 3, 1 / 3])
    with pytest.raises(ValueError, match="sum to 1"):
        check_weights([0.5, 0.5 + 1e-6])


@pytest.mark.parametrize("coverage", [-0.01, 1.01, 2.0, math.nan, math.inf, -math.inf])
def test_coverage_outside_the_unit_interval_is_rejected(coverage: float) -> None:
    with pytest.raises(ValueError, match="coverage must be between 0 and 1"):
        arm_ranges([0.5, 0.5], coverage)


# --- properties -------------------------------------------------------------------------------


@st.composite
def weight_lists(draw: st.DrawFn) -> list[float]:
    """2 to 5 weights from integer shares, so they sum to 1 up to rounding."""
    shares = draw(st.lists(st.integers(min_value=1, max_value=100), min_size=2, max_size=5))
    total = sum(shares)
    return [share / total for share in shares]


coverage_sequences = st.lists(
    st.floats(min_value=0.0, max_value=1.0, allow_nan=False), min_size=2, max_size=8, unique=True
).map(sorted)


def arms_over_ramp(
    weights: Sequence[float], coverages: Sequence[float], position: float
) -> list[int | None]:
    return [choose_arm(position, arm_ranges(weights, c)) for c in coverages]


def assert_sticky(assigned: Sequence[int | None]) -> None:
    """Out (None) may turn into an arm as coverage rises; an arm never changes or leaves."""
    first = next((i for i, arm in enumerate(assigned) if arm is not None), len(assigned))
    assert all(arm is None for arm in assigned[:first])
    assert len(set(assigned[first:])) <= 1, assigned


@PROPERTY
@given(
    weights=weight_lists(),
    coverages=coverage_sequences,
    seed=st.text(min_size=1, max_size=30),
    user_ids=st.lists(st.text(max_size=30), min_size=1, max_size=30),
)
def test_ramping_never_moves_an_assigned_user(
    weights: list[float], coverages: list[float], seed: str, user_ids: list[str]
) -> None:
    check_weights(weights)
    for user_id in user_ids:
        assert_sticky(arms_over_ramp(weights, coverages, bucket(seed, user_id)))


@PROPERTY
@given(
    weights=weight_lists(),
    coverages=coverage_sequences,
    position=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_ranges_only_grow_with_coverage(
    weights: list[float], coverages: list[float], position: float
) -> None:
    assert_sticky(arms_over_ramp(weights, coverages, position))
    for low_c, high_c in zip(coverages, coverages[1:], strict=False):
        for narrow, wide in zip(
            arm_ranges(weights, low_c), arm_ranges(weights, high_c), strict=True
        ):
            assert wide[0] == narrow[0]
            assert wide[1] >= narrow[1]


@PROPERTY
@given(seed=st.text(max_size=200), user_id=st.text(max_size=200))
def test_buckets_lie_in_the_unit_interval_and_are_deterministic(seed: str, user_id: str) -> None:
    position = bucket(seed, user_id)
    assert 0.0 <= position < 1.0
    assert position == bucket(seed, user_id) == independent_bucket(seed, user_id)


@pytest.mark.parametrize("weights", [[0.5, 0.5], [0.2, 0.3, 0.5], [0.1, 0.2, 0.3, 0.4]])
def test_the_planned_ramp_keeps_every_assigned_user_in_their_arm(weights: list[float]) -> None:
    ramp = [0.01, 0.05, 0.25, 0.5, 1.0]
    users = USERS[:20_000]
    positions = [bucket("lora-python", user) for user in users]
    arm_of: dict[str, int] = {}
    for coverage in ramp:
        ranges = arm_ranges(weights, coverage)
        now = {
            u: arm
            for u, p in zip(users, positions, strict=True)
            if (arm := choose_arm(p, ranges)) is not None
        }
        # Nobody already assigned leaves or switches arm.
        assert {u: now.get(u) for u in arm_of} == arm_of
        # The share in the experiment tracks coverage (4-sigma binomial band).
        sigma = math.sqrt(coverage * (1 - coverage) / len(users))
        assert abs(len(now) / len(users) - coverage) <= 4 * sigma + 1e-12
        arm_of = now
    assert len(arm_of) == len(users)  # full coverage takes everyone


def test_changing_the_weights_does_move_users() -> None:
    # Why arms are frozen while an experiment is live: a new split re-assigns people.
    positions = [bucket("lora-python", user) for user in USERS[:10_000]]
    before = [choose_arm(p, arm_ranges([0.5, 0.5], 1.0)) for p in positions]
    after = [choose_arm(p, arm_ranges([0.4, 0.6], 1.0)) for p in positions]
    moved = sum(a != b for a, b in zip(before, after, strict=True))
    assert 0.08 < moved / len(positions) < 0.12  # the positions in [0.4, 0.5)


def chi2_goodness_of_fit(observed: Sequence[int], expected: Sequence[float]) -> float:
    return math.fsum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))


def chi2_independence(table: Sequence[Sequence[int]]) -> float:
    """Pearson's χ² for independence of the rows and columns of a contingency table."""
    total = sum(map(sum, table))
    row_sums = [sum(row) for row in table]
    col_sums = [sum(col) for col in zip(*table, strict=True)]
    return math.fsum(
        (table[i][j] - row_sums[i] * col_sums[j] / total) ** 2 / (row_sums[i] * col_sums[j] / total)
        for i in range(len(table))
        for j in range(len(table[0]))
    )


def contingency(xs: Sequence[int], ys: Sequence[int], rows: int, cols: int) -> list[list[int]]:
    counts = Counter(zip(xs, ys, strict=True))
    return [[counts[(i, j)] for j in range(cols)] for i in range(rows)]


def deciles(seed: str) -> list[int]:
    return [int(bucket(seed, user) * 10) for user in USERS]


def test_buckets_are_uniform() -> None:
    # 100 equal bins over 100,000 ids: df = 99, critical value 148.230 at α = 0.001.
    bins = Counter(int(bucket("uniformity-check", user) * 100) for user in USERS)
    observed = [bins[i] for i in range(100)]
    assert chi2_goodness_of_fit(observed, [N_USERS / 100] * 100) < CHI2_CRIT_DF99


def test_numeric_ids_are_uniform_too() -> None:
    # Bare integers as ids (a common shape), same test and critical value.
    bins = Counter(int(bucket("lora-python", str(i)) * 100) for i in range(N_USERS))
    observed = [bins[i] for i in range(100)]
    assert chi2_goodness_of_fit(observed, [N_USERS / 100] * 100) < CHI2_CRIT_DF99


def test_arm_counts_follow_the_weights() -> None:
    # A sample-ratio check on the split itself: 3 arms, df = 2, critical value 13.816.
    weights = [0.2, 0.3, 0.5]
    ranges = arm_ranges(weights, 1.0)
    counts = Counter(choose_arm(bucket("srm-check", user), ranges) for user in USERS)
    assert None not in counts
    observed = [counts[i] for i in range(3)]
    assert chi2_goodness_of_fit(observed, [w * N_USERS for w in weights]) < CHI2_CRIT_DF2


@pytest.mark.parametrize(
    ("seed_a", "seed_b"),
    [("lora-python", "decoding-temperature"), ("exp-1", "exp-2"), ("a", "b")],
)
def test_two_experiments_assign_independently(seed_a: str, seed_b: str) -> None:
    # Two 50/50 experiments at full coverage over the same users: 2x2 table, df = 1,
    # critical value 10.828.
    xs = [bucket(seed_a, user) for user in USERS]
    ys = [bucket(seed_b, user) for user in USERS]
    ranges = arm_ranges([0.5, 0.5], 1.0)
    arms_a = [choose_arm(x, ranges) or 0 for x in xs]
    arms_b = [choose_arm(y, ranges) or 0 for y in ys]
    assert chi2_independence(contingency(arms_a, arms_b, 2, 2)) < CHI2_CRIT_DF1
    # Finer: deciles of the two buckets, 10x10 table, df = 81, critical value 126.083.
    deciles_a, deciles_b = [int(x * 10) for x in xs], [int(y * 10) for y in ys]
    assert chi2_independence(contingency(deciles_a, deciles_b, 10, 10)) < CHI2_CRIT_DF81
    # And no linear correlation: |r| < 4.5 / sqrt(n) (≈ 0.0142), a 4.5-sigma bound under r = 0.
    assert abs(pearson(xs, ys)) < 4.5 / math.sqrt(N_USERS)


def test_uneven_experiments_assign_independently() -> None:
    # 3 arms against 3 arms: 3x3 table, df = 4, critical value 18.467.
    ranges_a = arm_ranges([0.2, 0.3, 0.5], 1.0)
    ranges_b = arm_ranges([0.6, 0.2, 0.2], 1.0)
    arms_a = [choose_arm(bucket("exp-a", user), ranges_a) or 0 for user in USERS]
    arms_b = [choose_arm(bucket("exp-b", user), ranges_b) or 0 for user in USERS]
    assert chi2_independence(contingency(arms_a, arms_b, 3, 3)) < CHI2_CRIT_DF4


def test_a_layer_split_is_independent_of_its_experiments_arms() -> None:
    # The layer hash picks the experiment's traffic slice, the experiment's own hash the arm:
    # among users in the slice the arms must still split as weighted (2x2, df = 1, 10.828).
    layer = layer_seed("completion-model")
    in_slice = [int(in_range(bucket(layer, user), (0.0, 0.5))) for user in USERS]
    ranges = arm_ranges([0.5, 0.5], 1.0)
    arms = [choose_arm(bucket("lora-python", user), ranges) or 0 for user in USERS]
    assert chi2_independence(contingency(in_slice, arms, 2, 2)) < CHI2_CRIT_DF1
    assert chi2_independence(contingency(deciles(layer), deciles("lora-python"), 10, 10)) < (
        CHI2_CRIT_DF81
    )


def test_the_independence_check_detects_correlated_assignments() -> None:
    # The test has power: the same seed twice, or a seed shifted by half, fails it by far.
    same = deciles("lora-python")
    assert chi2_independence(contingency(same, same, 10, 10)) > 100 * CHI2_CRIT_DF81
    shifted = [(d + 5) % 10 for d in same]
    assert chi2_independence(contingency(same, shifted, 10, 10)) > 100 * CHI2_CRIT_DF81


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    n = len(xs)
    mean_x, mean_y = math.fsum(xs) / n, math.fsum(ys) / n
    cov = math.fsum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    var_x = math.fsum((x - mean_x) ** 2 for x in xs)
    var_y = math.fsum((y - mean_y) ** 2 for y in ys)
    return cov / math.sqrt(var_x * var_y)
