"""Quantiles of all events of an arm, read off latency histograms, with user-clustered CIs.

The metric is the p quantile q of every event of an arm pooled over its users (Deng, Knoblich
& Lu 2018, "Applying the delta method in metric analytics", section on clustered quantiles).
The users, not the events, are independent, so the interval comes from the empirical CDF as a
ratio metric over users: F̂(x) = Σ S_i(x) / Σ N_i (S_i: user i's events ≤ x, N_i: their
events), whose variance σ² the delta method gives from per-user (S_i, N_i) moments. The outer
interval of the quantile is [Q̂(p − z·σ), Q̂(p + z·σ)], and se(q̂) ≈ σ / f(q̂), the density
read off the histogram as a secant: (Q̂(p + σ) − Q̂(p − σ)) / 2.

Choices:
- Q̂ interpolates inside a histogram bucket, uniformly in log-latency (buckets are 4 % wide in
  log-space); bucket 0 ([0, BASE) ms) is linear, as log-space cannot start at 0. Estimates so
  move continuously with the data instead of in 4 % steps.
- S_i is evaluated at q̂ itself, with the same interpolation: the user's events in buckets below
  the bucket holding q̂ plus the share f of their events in that bucket, f being the pooled
  share below q̂ (``quantile_bucket``). Then Σ S_i / Σ N_i = p exactly, and σ² is the variance
  of F̂ where the quantile sits rather than at a bucket edge up to 4 % away.
- z is Student's t at 1 − α/2. Its degrees of freedom are Satterthwaite's for the clustered
  variance Σ r_i² (r_i = S_i − p·N_i, the users' residuals at q̂): ν = 3(Σ r_i²)² / Σ r_i⁴ (σ_i⁴
  estimated as r_i⁴ / 3, the normal kurtosis), at most users − 1. In the tails few users carry
  the residuals (at p99, ν is ~20 of 200 users in the simulation of tests/test_stats_quantiles.py)
  and t(users − 1) covered p95 and p99 only 93.0–94.6 % there; with ν every interval, arms and
  differences, covers 94.3–95.4 %. Without Σ r_i⁴, users − 1.
- se's secant spans ±σ, not the interval's ±z·σ: Q̂ is convex in the tails, so the wide secant
  overstates se there (by a third at p99 with 200 users in the simulation), and the difference
  of two arms covered 97 % instead of 95 %. se is free of z (and of ν): the comparison's t test
  brings its own degrees of freedom.
- Two arms compare on the relative difference (q_t − q_c) / q_c, with the delta-method variance
  se_t² / q_c² + se_c² · q_t² / q_c⁴: each arm becomes an ``ArmEstimate`` (n users, mean q,
  per-user variance se² · n), so the t tests, confidence sequences and non-inferiority are those
  of every other metric.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from experiments.analysis.options import DEFAULT_N_STAR
from experiments.analysis.stats._distributions import t_ppf
from experiments.analysis.stats.compare import compare_estimates
from experiments.analysis.stats.estimates import ArmEstimate, ratio_estimate
from experiments.analysis.stats.moments import RatioMoments
from experiments.analysis.stats.noninferiority import estimates_non_inferiority, no_inference
from experiments.analysis.stats.results import Comparison, Interval, NonInferiority, ResultCode

# The histogram's geometry: bucket k >= 1 holds [BASE^k, BASE^(k+1)) ms, bucket 0 holds
# [0, BASE); the SQL that writes the histograms (experiments.analysis.contributions) uses it.
BUCKET_BASE = 1.04
# Σ N_i of the moments and the histogram's total count the same events; more apart than this is
# a caller's bug (moments from one query, histogram from another), not rounding.
EVENTS_MISMATCH_TOLERANCE = 1e-6


def bucket_bounds(bucket: int) -> Interval:
    """The latencies (ms) a bucket holds, [low, high)."""
    if bucket <= 0:
        return (0.0, BUCKET_BASE)
    return (BUCKET_BASE**bucket, BUCKET_BASE ** (bucket + 1))


def quantile_bucket(counts: Mapping[int, int], p: float) -> tuple[int, float]:
    """The bucket holding the p quantile and the share f of its events below it.

    (events in lower buckets + f · the bucket's events) / all events = p. The bucket is the first
    whose cumulative count reaches p · total (quantiles_sql picks the same, in the same float
    arithmetic), so at a boundary f = 1 in the lower bucket.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    total = sum(counts.values())
    if total <= 0:
        raise ValueError("empty histogram")
    target = p * total
    below = 0
    for bucket in sorted(b for b, n in counts.items() if n > 0):
        count = counts[bucket]
        if below + count >= target:
            return bucket, (target - below) / count
        below += count
    raise AssertionError("unreachable: the cumulative count reaches the total")


def histogram_quantile(counts: Mapping[int, int], p: float) -> float:
    """The p quantile (p in [0, 1]) of a latency histogram, interpolated inside its bucket."""
    bucket, share = quantile_bucket(counts, p)
    if bucket <= 0:
        return share * BUCKET_BASE
    return float(BUCKET_BASE ** (bucket + share))


@dataclasses.dataclass(frozen=True, slots=True)
class QuantileEstimate:
    """An arm's p quantile over its events: the value, its standard error and outer CI.

    ``value`` is filled whenever there are events; ``se`` and ``ci`` only with code OK (``se`` is
    0.0 with ZERO_VARIANCE).
    """

    code: ResultCode
    p: float
    alpha: float
    users: int
    events: int
    value: float | None = None
    se: float | None = None
    ci: Interval | None = None
    # The t reference's degrees of freedom (filled with se).
    dof: float | None = None


def _check_level(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value}")


def satterthwaite_dof(at_quantile: RatioMoments, p: float, residual_fourth: float) -> float:
    """ν = 3(Σ r_i²)² / Σ r_i⁴ for r_i = S_i − p·N_i, within [1, users − 1]."""
    m = at_quantile
    squares = m.m_sum_squares - 2.0 * p * m.md_sum + p * p * m.d_sum_squares
    if residual_fourth <= 0.0 or squares <= 0.0:
        return float(m.n - 1)
    return min(float(m.n - 1), max(1.0, 3.0 * squares * squares / residual_fourth))


def quantile_estimate(
    histogram: Mapping[int, int],
    at_quantile: RatioMoments,
    p: float,
    alpha: float = 0.05,
    *,
    residual_fourth: float | None = None,
) -> QuantileEstimate:
    """The p quantile of ``histogram`` with its user-clustered (1 − alpha) CI.

    ``at_quantile`` holds the per-user moments of (S_i at the quantile, N_i), as
    ``quantile_bucket`` defines S_i: m = S_i, d = N_i, n = users with events.
    ``residual_fourth`` is Σ (S_i − p·N_i)⁴, for the degrees of freedom (None: users − 1).
    """
    _check_level("p", p)
    _check_level("alpha", alpha)
    events = sum(histogram.values())
    users = at_quantile.n
    empty = QuantileEstimate(ResultCode.OK, p=p, alpha=alpha, users=users, events=events)
    if events <= 0 or users <= 0:
        return dataclasses.replace(empty, code=ResultCode.NO_USERS)
    if abs(at_quantile.d_sum - events) > EVENTS_MISMATCH_TOLERANCE * events:
        raise ValueError(f"moments count {at_quantile.d_sum} events, the histogram {events}")
    value = histogram_quantile(histogram, p)
    if users < 2:
        return dataclasses.replace(empty, code=ResultCode.TOO_FEW_USERS, value=value)
    sigma = math.sqrt(max(ratio_estimate(at_quantile).variance, 0.0) / users)
    dof = float(users - 1)
    if residual_fourth is not None:
        dof = satterthwaite_dof(at_quantile, p, residual_fourth)
    z = t_ppf(1.0 - alpha / 2.0, dof)
    low = histogram_quantile(histogram, max(0.0, p - z * sigma))
    high = histogram_quantile(histogram, min(1.0, p + z * sigma))
    se = (
        histogram_quantile(histogram, min(1.0, p + sigma))
        - histogram_quantile(histogram, max(0.0, p - sigma))
    ) / 2.0
    if sigma <= 0.0 or high <= low or se <= 0.0:
        # Every user has the same share of events below q̂ (e.g. all events in one bucket).
        return dataclasses.replace(empty, code=ResultCode.ZERO_VARIANCE, value=value, se=0.0)
    return dataclasses.replace(empty, value=value, se=se, ci=(low, high), dof=dof)


def _arm(estimate: QuantileEstimate) -> ArmEstimate:
    assert estimate.value is not None and estimate.se is not None
    return ArmEstimate(
        n=estimate.users,
        mean=estimate.value,
        variance=estimate.se * estimate.se * estimate.users,
        unadjusted_mean=estimate.value,
        # welch_dof reads an arm's degrees of freedom as dof_n − 1.
        dof_n=None if estimate.dof is None else estimate.dof + 1.0,
    )


def _blocking_code(control: QuantileEstimate, treatment: QuantileEstimate) -> ResultCode | None:
    codes = (control.code, treatment.code)
    for code in (ResultCode.NO_USERS, ResultCode.TOO_FEW_USERS):
        if code in codes:
            return code
    return None


def compare_quantiles(
    control: QuantileEstimate,
    treatment: QuantileEstimate,
    *,
    alpha: float = 0.05,
    sequential: bool = False,
    n_star: float = DEFAULT_N_STAR,
    higher_is_better: bool = False,
) -> Comparison:
    """Welch t tests (and optionally confidence sequences) of treatment's quantile vs control's.

    The arms' estimates should be built at the same ``alpha`` (their se depends on it a little).
    ``higher_is_better`` only orients the chance to win (latency: lower is better).
    """
    _check_level("alpha", alpha)
    if n_star <= 0:
        raise ValueError(f"n_star must be > 0, got {n_star}")
    if control.p != treatment.p:
        raise ValueError(f"control is p = {control.p}, treatment p = {treatment.p}")
    base = Comparison(
        code=ResultCode.OK,
        control_n=control.users,
        treatment_n=treatment.users,
        alpha=alpha,
        control_mean=control.value,
        treatment_mean=treatment.value,
    )
    blocking = _blocking_code(control, treatment)
    if blocking is not None:
        return dataclasses.replace(base, code=blocking)
    return compare_estimates(
        base,
        _arm(control),
        _arm(treatment),
        alpha=alpha,
        sequential=sequential,
        n_star=n_star,
        higher_is_better=higher_is_better,
    )


def quantile_non_inferiority(
    control: QuantileEstimate,
    treatment: QuantileEstimate,
    *,
    margin: float,
    alpha: float = 0.05,
    sequential: bool = False,
    n_star: float = DEFAULT_N_STAR,
) -> NonInferiority:
    """One-sided test that treatment's quantile is not higher than control's by over ``margin``.

    Lower is better (latency), the margin is relative (0.05: 5 % of control's quantile), and the
    semantics, sequential variant included, are those of ``stats.noninferiority``.
    """
    if control.p != treatment.p:
        raise ValueError(f"control is p = {control.p}, treatment p = {treatment.p}")
    blocking = _blocking_code(control, treatment)
    if blocking is not None:
        return no_inference(
            blocking, margin=margin, higher_is_better=False, alpha=alpha, sequential=sequential
        )
    return estimates_non_inferiority(
        _arm(control),
        _arm(treatment),
        margin=margin,
        higher_is_better=False,
        alpha=alpha,
        sequential=sequential,
        n_star=n_star,
    )
