"""Welch t-test on absolute and relative lift, with Welch–Satterthwaite degrees of freedom.

Conventions follow gbstats 0.8.0 so its published values are reproduced: absolute lift
μt − μc with variance vt/nt + vc/nc; relative lift (μt − μc) / μc with the delta-method variance
vt/(μc²·nt) + vc·μt²/(μc⁴·nc), where μ are the unadjusted means (CUPED adjusts the numerator
only); both tests use the same Welch–Satterthwaite degrees of freedom.
"""

from __future__ import annotations

import dataclasses
import math

from experiments.analysis.stats._distributions import t_ppf, t_sf
from experiments.analysis.stats.estimates import ArmEstimate
from experiments.analysis.stats.results import Interval


@dataclasses.dataclass(frozen=True, slots=True)
class Lift:
    """A lift estimate with its standard error, CI and two-sided p-value."""

    estimate: float
    se: float
    ci: Interval
    p_value: float


def welch_dof(control: ArmEstimate, treatment: ArmEstimate) -> float:
    """Welch–Satterthwaite degrees of freedom; needs n ≥ 2 and one variance > 0.

    An arm's ``dof_n`` (its effective sample size), when set, stands for its n − 1 + 1.
    """
    vc = control.variance / control.n
    vt = treatment.variance / treatment.n
    dc = (control.dof_n or control.n) - 1
    dt = (treatment.dof_n or treatment.n) - 1
    return (vc + vt) ** 2 / (vc * vc / dc + vt * vt / dt)


def absolute_lift(control: ArmEstimate, treatment: ArmEstimate) -> tuple[float, float]:
    """μt − μc and the variance of that estimate."""
    variance = control.variance / control.n + treatment.variance / treatment.n
    return treatment.mean - control.mean, variance


def relative_lift(control: ArmEstimate, treatment: ArmEstimate) -> tuple[float, float]:
    """(μt − μc) / μc and its delta-method variance; needs μc ≠ 0."""
    mc = control.unadjusted_mean
    mt = treatment.unadjusted_mean
    estimate = (treatment.mean - control.mean) / mc
    variance = treatment.variance / (mc * mc * treatment.n) + control.variance * mt * mt / (
        mc**4 * control.n
    )
    return estimate, variance


def t_interval(estimate: float, se: float, dof: float, alpha: float) -> Interval:
    """Two-sided (1 − alpha) t interval."""
    half = t_ppf(1.0 - alpha / 2.0, dof) * se
    return (estimate - half, estimate + half)


def t_p_value(estimate: float, se: float, dof: float) -> float:
    """Two-sided p-value of estimate / se against Student's t."""
    return min(1.0, 2.0 * t_sf(abs(estimate) / se, dof))


def t_test(estimate: float, variance: float, dof: float, alpha: float) -> Lift:
    """CI and p-value of one lift; needs variance > 0."""
    se = math.sqrt(variance)
    return Lift(
        estimate=estimate,
        se=se,
        ci=t_interval(estimate, se, dof, alpha),
        p_value=t_p_value(estimate, se, dof),
    )
