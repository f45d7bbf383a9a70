"""Sufficient statistics of user-level metrics: what SQL returns and the statistics consume.

The user is the unit of randomization and of analysis, so every metric is summed per user first
(``m`` = the user's numerator, ``d`` = the user's denominator for ratio metrics) and only these
sums over users leave the database. ``+`` merges strata (days, languages) exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Self


class _Summable:
    """``a + b`` adds field by field: moments of disjoint sets of users merge exactly."""

    __slots__ = ()

    def __add__(self, other: Self) -> Self:
        if type(other) is not type(self):
            return NotImplemented
        names = [field.name for field in dataclasses.fields(self)]  # type: ignore[arg-type]
        sums: dict[str, Any] = {name: getattr(self, name) + getattr(other, name) for name in names}
        return type(self)(**sums)


@dataclasses.dataclass(frozen=True, slots=True)
class MeanMoments(_Summable):
    """Per-user values m: n users, Σm, Σm²."""

    n: int
    sum: float
    sum_squares: float


@dataclasses.dataclass(frozen=True, slots=True)
class RatioMoments(_Summable):
    """Per-user numerator m and denominator d (the metric is Σm / Σd): n, Σm, Σm², Σd, Σd², Σmd."""

    n: int
    m_sum: float
    m_sum_squares: float
    d_sum: float
    d_sum_squares: float
    md_sum: float
    # Third-order sums Σm²d, Σmd², Σd³: the heavy-user (leverage) correction of the variance
    # (``estimates.small_sample_corrected``); 0 when not loaded (then it falls back to Kish's).
    m2d_sum: float = 0.0
    md2_sum: float = 0.0
    d3_sum: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class CupedMeanMoments(_Summable):
    """A mean metric with its pre-period value x per user as covariate (CUPED)."""

    n: int
    post_sum: float
    post_sum_squares: float
    pre_sum: float
    pre_sum_squares: float
    post_pre_sum: float


@dataclasses.dataclass(frozen=True, slots=True)
class CupedRatioMoments(_Summable):
    """A ratio metric with its pre-period numerator and denominator per user (CUPED).

    The cross sums are every product the delta method needs for the covariance of
    (m_post, d_post, m_pre, d_pre).
    """

    n: int
    m_post_sum: float
    m_post_sum_squares: float
    d_post_sum: float
    d_post_sum_squares: float
    m_pre_sum: float
    m_pre_sum_squares: float
    d_pre_sum: float
    d_pre_sum_squares: float
    m_post_d_post_sum: float
    m_pre_d_pre_sum: float
    m_post_m_pre_sum: float
    m_post_d_pre_sum: float
    d_post_m_pre_sum: float
    d_post_d_pre_sum: float
    # Σm²d, Σmd², Σd³ of the experiment period (see RatioMoments).
    m2d_sum: float = 0.0
    md2_sum: float = 0.0
    d3_sum: float = 0.0


Moments = MeanMoments | RatioMoments | CupedMeanMoments | CupedRatioMoments
