"""Percentile-bootstrap CIs of per-sample scores, and the paired difference between two arms.

Made for offline evaluations (backtests), where every arm scores the same samples: resampling
the samples, with the same indices for both arms, keeps the pairing, so the CI of a difference
is much tighter than two independent CIs suggest. Not for online metrics, whose unit is the user
(those go through ``compare``). A fixed seed makes every interval reproducible.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from experiments.analysis.options import DEFAULT_ALPHA, DEFAULT_RESAMPLES
from experiments.analysis.stats.results import Interval, ResultCode

# Rows of resampled scores (resamples × n) -> the statistic of each row.
Statistic = Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]


def mean(rows: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The mean of each row."""
    return np.asarray(rows.mean(axis=1), dtype=np.float64)


def percentile(q: float) -> Statistic:
    """The ``q``-th percentile (0–100, linear interpolation) of each row."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within [0, 100], got {q}")

    def statistic(rows: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.asarray(np.percentile(rows, q, axis=1), dtype=np.float64)

    return statistic


@dataclasses.dataclass(frozen=True, slots=True)
class BootstrapEstimate:
    """A statistic of one arm's scores with its percentile-bootstrap CI."""

    code: ResultCode
    n: int
    estimate: float | None = None
    ci: Interval | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class PairedDifference:
    """statistic(treatment) − statistic(control) over the same samples, resampled together.

    ``p_value`` is two-sided: twice the smaller share of resampled differences on either side
    of 0 (with the +1 correction, so it is never exactly 0), capped at 1.
    """

    code: ResultCode
    n: int
    estimate: float | None = None
    ci: Interval | None = None
    p_value: float | None = None


def _scores(values: Sequence[float] | npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    scores = np.asarray(values, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError("scores must be one-dimensional")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    return scores


def _indices(n: int, *, resamples: int, seed: int) -> npt.NDArray[np.int64]:
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    rng = np.random.Generator(np.random.PCG64(seed))
    return rng.integers(0, n, size=(resamples, n))


def _interval(statistics: npt.NDArray[np.float64], alpha: float) -> Interval:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be within (0, 1), got {alpha}")
    low, high = np.quantile(statistics, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _degenerate(n: int) -> ResultCode | None:
    if n == 0:
        return ResultCode.NO_SAMPLES
    if n == 1:
        return ResultCode.TOO_FEW_SAMPLES
    return None


def bootstrap_ci(
    values: Sequence[float] | npt.NDArray[np.float64],
    *,
    statistic: Statistic = mean,
    resamples: int = DEFAULT_RESAMPLES,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
) -> BootstrapEstimate:
    """``statistic`` of ``values`` and its (1 − α) percentile-bootstrap interval."""
    scores = _scores(values)
    n = len(scores)
    if n == 0:
        return BootstrapEstimate(ResultCode.NO_SAMPLES, 0)
    estimate = float(statistic(scores[None, :])[0])
    code = _degenerate(n)
    if code is not None:
        return BootstrapEstimate(code, n, estimate)
    resampled = statistic(scores[_indices(n, resamples=resamples, seed=seed)])
    return BootstrapEstimate(ResultCode.OK, n, estimate, _interval(resampled, alpha))


def paired_difference(
    control: Sequence[float] | npt.NDArray[np.float64],
    treatment: Sequence[float] | npt.NDArray[np.float64],
    *,
    statistic: Statistic = mean,
    resamples: int = DEFAULT_RESAMPLES,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
) -> PairedDifference:
    """statistic(treatment) − statistic(control), ``control[i]`` and ``treatment[i]`` being the
    same sample, with its percentile-bootstrap interval and two-sided p-value."""
    a, b = _scores(control), _scores(treatment)
    if len(a) != len(b):
        raise ValueError(f"paired scores differ in length: {len(a)} control vs {len(b)} treatment")
    n = len(a)
    if n == 0:
        return PairedDifference(ResultCode.NO_SAMPLES, 0)
    estimate = float(statistic(b[None, :])[0] - statistic(a[None, :])[0])
    code = _degenerate(n)
    if code is not None:
        return PairedDifference(code, n, estimate)
    rows = _indices(n, resamples=resamples, seed=seed)
    differences = statistic(b[rows]) - statistic(a[rows])
    below = int((differences <= 0).sum())
    above = int((differences >= 0).sum())
    p_value = min(1.0, 2 * (min(below, above) + 1) / (resamples + 1))
    return PairedDifference(ResultCode.OK, n, estimate, _interval(differences, alpha), p_value)
