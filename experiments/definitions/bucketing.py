"""Deterministic bucketing: which slice of traffic a user falls in. Pure functions only.

A user's bucket in an experiment is a versioned hash of (seed, user_id) into [0, 1). Arms own
fixed half-open ranges scaled by the experiment's coverage (as GrowthBook's bucket ranges do):
arm i owns [start_i, start_i + coverage * weight_i) where start_i is the sum of the weights
before it. Raising coverage only widens each range, so a ramp adds users and moves nobody.

A new hash is a new version, never an edit of an old one: changing a version's output would
move every running experiment's users between arms.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence

Range = tuple[float, float]

_TWO_64 = float(2**64)


def _hash_v1(seed: str, user_id: str) -> float:
    # BLAKE2b-64 of "seed:user_id" as a big-endian integer over 2**64. A cryptographic hash
    # makes different seeds' buckets independent; 64 bits leave no visible granularity.
    digest = hashlib.blake2b(f"{seed}:{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _TWO_64


BUCKETING_VERSIONS: dict[int, Callable[[str, str], float]] = {1: _hash_v1}
CURRENT_VERSION = 1


def bucket(seed: str, user_id: str, *, version: int = CURRENT_VERSION) -> float:
    """The user's position in [0, 1) for ``seed`` under bucketing ``version``."""
    try:
        hash_fn = BUCKETING_VERSIONS[version]
    except KeyError:
        raise ValueError(f"unknown bucketing version {version}") from None
    return hash_fn(seed, user_id)


def layer_seed(layer: str) -> str:
    """The seed of a layer's own hash, which splits its traffic between its experiments."""
    return f"layer:{layer}"


WEIGHT_TOLERANCE = 1e-9


def check_weights(weights: Sequence[float]) -> None:
    """Raise unless the weights are positive and sum to 1 (they are never "repaired")."""
    if not weights:
        raise ValueError("an experiment needs at least one arm")
    if any(not math.isfinite(w) or w <= 0 for w in weights):
        raise ValueError(f"arm weights must be positive numbers, got {list(weights)}")
    total = math.fsum(weights)
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise ValueError(f"arm weights must sum to 1, they sum to {total:.6g}")


def arm_ranges(weights: Sequence[float], coverage: float) -> list[Range]:
    """Each arm's half-open bucket range at ``coverage`` (0 to 1)."""
    check_weights(weights)
    if not 0.0 <= coverage <= 1.0:
        raise ValueError(f"coverage must be between 0 and 1, got {coverage}")
    ranges: list[Range] = []
    start = 0.0
    for weight in weights:
        ranges.append((start, start + coverage * weight))
        start += weight
    return ranges


def choose_arm(position: float, ranges: Sequence[Range]) -> int | None:
    """Index of the arm whose range holds ``position``, or None (not in the experiment)."""
    for index, (low, high) in enumerate(ranges):
        if low <= position < high:
            return index
    return None


def in_range(position: float, bounds: Range) -> bool:
    """Whether ``position`` lies in the half-open range ``bounds``."""
    return bounds[0] <= position < bounds[1]
