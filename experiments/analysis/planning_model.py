"""The arithmetic of experiment planning, on pre-period sufficient statistics. Pure functions.

- **Growth** U(L): distinct users seen in L days, the mean over every L-day stretch of the
  pre-period; beyond the window, U(N) + b·ln(L / N) with b fitted on the window's second half.
- **Exposure**: bucketing is monotone, so a user is exposed once they show up while the coverage
  covers their bucket; a plan whose coverage rises by Δc_k at day s_k has exposed
  Σ_k Δc_k·U(T − s_k) of the targeted users by day T (times the experiment's traffic slice).
- **Per-user moments** over a stretch of L days are measured on a grid of L; the plan's users
  mix stretches of T − s_k days, so their moments are the same mix (moments of disjoint users
  add), per active user interpolated linearly between grid points and, beyond its ends, each
  user's values scaled with the length (relative spreads held).
- **MDE** (relative, two-sided α, power 1 − β): (z_{1−α/2} + z_{1−β})·σ·√(1/n_c + 1/n_t) / |μ|,
  the normal approximation of the analysis' relative Welch test with equal arm variances.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Mapping, Sequence
from statistics import NormalDist

from experiments.analysis.stats.estimates import is_zero_variance, ratio_variance
from experiments.analysis.stats.moments import Moments, RatioMoments
from experiments.analysis.stats.results import ResultCode

_NORMAL = NormalDist()
# Users per arm below this: no variance estimate, so no MDE (as the analysis' n < 2).
MIN_ARM_USERS = 2.0


def z(quantile: float) -> float:
    """The standard normal ``quantile``."""
    return _NORMAL.inv_cdf(quantile)


@dataclasses.dataclass(frozen=True)
class Growth:
    """U(L), users seen in L days: ``observed[L − 1]`` for L ≤ N, then U(N) + slope·ln(L / N)."""

    observed: tuple[float, ...]
    slope: float

    @property
    def days(self) -> int:
        """N, the days observed."""
        return len(self.observed)

    def at(self, length_days: float) -> float:
        """Users seen in ``length_days`` days (fractional days interpolated linearly)."""
        if length_days <= 0 or not self.observed:
            return 0.0
        n = self.days
        if length_days > n:
            return self.observed[-1] + self.slope * math.log(length_days / n)
        low = math.floor(length_days)
        below = self.observed[low - 1] if low >= 1 else 0.0
        if low == length_days:
            return below
        return below + (self.observed[low] - below) * (length_days - low)


def users_seen(users: int, gaps: Mapping[int, int], days: int) -> tuple[float, ...]:
    """U(1..days) from the histogram of inactive runs of ``users`` users over ``days`` days.

    A user is missed by an L-day stretch only when it lies inside one of their inactive runs: a
    run of g days holds max(0, g − L + 1) of the days − L + 1 stretches.
    """
    out = []
    for length in range(1, days + 1):
        stretches = days - length + 1
        missed = sum(count * max(0, gap - length + 1) for gap, count in gaps.items())
        out.append(users - missed / stretches)
    return tuple(out)


def log_slope(observed: Sequence[float]) -> float:
    """b of a least-squares fit U(L) ≈ a + b·ln L over the second half of the window (b ≥ 0).

    The second half, because the first days' steep rise says little about later growth; a log
    curve keeps growing but slower and slower, which under-states a steady inflow of new users
    (a conservative plan) and slightly over-states a closed team's.
    """
    n = len(observed)
    if n < 2:
        return 0.0
    lengths = range(max(1, math.ceil(n / 2)), n + 1)
    if len(lengths) < 2:
        lengths = range(1, n + 1)
    xs = [math.log(length) for length in lengths]
    ys = [observed[length - 1] for length in lengths]
    x_mean, y_mean = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - x_mean) ** 2 for x in xs)
    sxy = sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, ys, strict=True))
    return max(0.0, sxy / sxx)


def growth_from_gaps(users: int, gaps: Mapping[int, int], days: int) -> Growth:
    """The growth curve of a group from its pre-period histogram."""
    observed = users_seen(users, gaps, days)
    return Growth(observed=observed, slope=log_slope(observed))


@dataclasses.dataclass(frozen=True)
class Step:
    """From ``start_days`` on, ``added`` more of the targeted users' buckets are covered."""

    start_days: float
    added: float


def exposed(growth: Growth, steps: Sequence[Step], duration_days: float) -> float:
    """Targeted users exposed by ``duration_days``: Σ_k added_k·U(T − s_k)."""
    return sum(step.added * growth.at(duration_days - step.start_days) for step in steps)


# The degree of each moment field in the user's values: n, sums, and squares or products.
_RATIO_DEGREES = (0, 1, 2, 1, 2, 2, 3, 3, 3)  # n, Σm, Σm², Σd, Σd², Σmd, Σm²d, Σmd², Σd³
_MEAN_DEGREES = (0, 1, 2)  # n, Σm, Σm²


@dataclasses.dataclass(frozen=True)
class Profile:
    """A metric's moments per active user, by stretch length (days, ascending)."""

    lengths: tuple[int, ...]
    per_user: tuple[tuple[float, ...], ...]
    ratio: bool

    def at(self, length_days: float) -> tuple[float, ...]:
        """Moments per active user over ``length_days``, interpolated between grid points.

        Outside the grid each user's values scale with the length (their rate of activity held):
        sums by k, squares by k², so a ratio and every relative spread stay as measured at the
        nearest end while a count metric's baseline keeps growing with the days.
        """
        if length_days <= self.lengths[0]:
            return self._scaled(0, length_days / self.lengths[0])
        if length_days >= self.lengths[-1]:
            return self._scaled(-1, length_days / self.lengths[-1])
        upper = bisect.bisect_left(self.lengths, length_days)
        lo, hi = self.lengths[upper - 1], self.lengths[upper]
        share = (length_days - lo) / (hi - lo)
        return tuple(
            a + (b - a) * share
            for a, b in zip(self.per_user[upper - 1], self.per_user[upper], strict=True)
        )

    def _scaled(self, index: int, factor: float) -> tuple[float, ...]:
        degrees = _RATIO_DEGREES if self.ratio else _MEAN_DEGREES
        return tuple(
            v * factor**degree for v, degree in zip(self.per_user[index], degrees, strict=True)
        )


def profile(windows: Sequence[tuple[int, int, Moments]]) -> Profile | None:
    """A profile from (stretch days, active users, moments) rows (None: no active user)."""
    rows = sorted((d, u, m) for d, u, m in windows if u > 0)
    if not rows:
        return None
    per_user = tuple(tuple(v / u for v in dataclasses.astuple(m)) for _, u, m in rows)
    return Profile(
        lengths=tuple(d for d, _, _ in rows),
        per_user=per_user,
        ratio=isinstance(rows[0][2], RatioMoments),
    )


@dataclasses.dataclass(frozen=True)
class Population:
    """The plan's users of one metric: how many (all arms), the metric and its per-user sd."""

    code: ResultCode
    users: float
    mean: float | None = None
    variance: float | None = None
    # Kish's effective users, (Σw)² / Σw² (``stats.estimates.effective_users``): the analysis
    # judges no row with too few of them in an arm.
    effective_users: float = 0.0


def population(
    growth: Growth, metric: Profile, steps: Sequence[Step], duration_days: float
) -> Population:
    """The moments of the users a plan of ``duration_days`` exposes, as mean and variance."""
    total: list[float] | None = None
    for step in steps:
        length = duration_days - step.start_days
        weight = step.added * growth.at(length)
        if weight <= 0:
            continue
        part = [weight * v for v in metric.at(length)]
        total = part if total is None else [a + b for a, b in zip(total, part, strict=True)]
    if total is None or total[0] <= 0:
        return Population(ResultCode.NO_USERS, 0.0)
    return summarize(total, ratio=metric.ratio)


def summarize(moments: Sequence[float], *, ratio: bool) -> Population:
    """Mean and per-user variance (divisor n) of (possibly fractional) moment sums."""
    n = moments[0]
    if ratio:
        _, m_sum, m_squares, d_sum, d_squares, md_sum = moments[:6]
        effective = d_sum * d_sum / d_squares if d_squares > 0 else n
        if d_sum == 0:
            return Population(ResultCode.ZERO_DENOMINATOR, n, effective_users=effective)
        mean_m, mean_d = m_sum / n, d_sum / n
        variance = ratio_variance(
            mean_m,
            mean_d,
            m_squares / n - mean_m**2,
            d_squares / n - mean_d**2,
            md_sum / n - mean_m * mean_d,
        )
        mean = mean_m / mean_d
        scale = (m_squares + mean * mean * d_squares) / (n * mean_d**2)
    else:
        _, total, squares = moments
        effective = total * total / squares if squares > 0 else n
        mean = total / n
        variance = squares / n - mean**2
        scale = squares / n
    if is_zero_variance(variance, scale):
        return Population(ResultCode.ZERO_VARIANCE, n, mean, 0.0, effective)
    if mean == 0:
        return Population(ResultCode.ZERO_BASELINE, n, mean, variance, effective)
    return Population(ResultCode.OK, n, mean, variance, effective)


def relative_se(pop: Population, control_share: float, treatment_share: float) -> float | None:
    """The standard error of the relative lift between two arms of these shares of users."""
    if pop.code is not ResultCode.OK or pop.mean is None or pop.variance is None:
        return None
    n_c, n_t = pop.users * control_share, pop.users * treatment_share
    if min(n_c, n_t) < MIN_ARM_USERS:
        return None
    return math.sqrt(pop.variance * (1.0 / n_c + 1.0 / n_t)) / abs(pop.mean)


def mde(se: float, *, alpha: float, power: float) -> float:
    """The relative effect detected with ``power`` by a two-sided test at ``alpha``."""
    return (z(1.0 - alpha / 2.0) + z(power)) * se


def power_at(effect: float, se: float, *, alpha: float) -> float:
    """The power of a two-sided test at ``alpha`` against ``effect`` (both tails counted)."""
    critical = z(1.0 - alpha / 2.0)
    ratio = abs(effect) / se
    return _NORMAL.cdf(ratio - critical) + _NORMAL.cdf(-ratio - critical)


# Days to a target MDE are searched up to this horizon; longer plans are "> MAX_DAYS".
MAX_DAYS = 90


def days_to(target: float, mde_after: Sequence[float | None]) -> int | None:
    """The first day (1-based) whose MDE is at most ``target`` (None: none within the list)."""
    for day, value in enumerate(mde_after, start=1):
        if value is not None and value <= target:
            return day
    return None
