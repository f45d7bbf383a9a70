"""Non-inferiority for guardrails: treatment is not worse than control by more than a margin.

The margin is relative (0.05 = 5 % of the control mean) and its side follows the metric's
direction. With L the relative lift and se its delta-method standard error:
- higher is better: H0 L ≤ −margin vs H1 L > −margin; p = P(T > (L + margin) / se);
  bound = L − t(1−α)·se, a lower bound; non-inferior when bound > −margin;
- lower is better: H0 L ≥ margin vs H1 L < margin; p = P(T > (margin − L) / se);
  bound = L + t(1−α)·se, an upper bound; non-inferior when bound < margin.
"p < α" and "bound on the safe side" are the same event. T has the Welch degrees of freedom.
The sequential variant swaps the t bound for the confidence sequence's and the t p-value for the
sequence's p-value against the margin, keeping that equivalence (same ρ).
"""

from __future__ import annotations

import dataclasses
import math

from experiments.analysis.options import DEFAULT_N_STAR
from experiments.analysis.stats._distributions import t_ppf, t_sf
from experiments.analysis.stats.compare import prepare
from experiments.analysis.stats.estimates import ArmEstimate, is_zero_baseline
from experiments.analysis.stats.frequentist import relative_lift, welch_dof
from experiments.analysis.stats.moments import Moments
from experiments.analysis.stats.results import NonInferiority, ResultCode
from experiments.analysis.stats.sequential import cs_interval, cs_p_value, tuning_rho


def non_inferiority(
    control: Moments,
    treatment: Moments,
    *,
    margin: float,
    higher_is_better: bool,
    alpha: float = 0.05,
    cuped: bool = True,
    proportion: bool = False,
    sequential: bool = False,
    n_star: float = DEFAULT_N_STAR,
    small_sample: bool = False,
) -> NonInferiority:
    """One-sided test that the relative lift is not worse than ``margin`` (e.g. 0.05).

    With ``sequential`` the bound is the harmful-side end of the two-sided (1 − α) confidence
    sequence, so a gate may re-test every day; it is conservative for a one-sided claim.
    ``small_sample``: the heavy-user correction of ``compare`` (the analysis uses it whenever it
    caps).
    """
    # Bad options are rejected before the data are looked at.
    no_inference(
        ResultCode.OK,
        margin=margin,
        higher_is_better=higher_is_better,
        alpha=alpha,
        sequential=sequential,
    )
    prepared = prepare(
        control, treatment, cuped=cuped, proportion=proportion, small_sample=small_sample
    )
    arm_c, arm_t = prepared.control, prepared.treatment
    if arm_c is None or arm_t is None:
        return no_inference(
            prepared.code,
            margin=margin,
            higher_is_better=higher_is_better,
            alpha=alpha,
            sequential=sequential,
        )
    return estimates_non_inferiority(
        arm_c,
        arm_t,
        margin=margin,
        higher_is_better=higher_is_better,
        alpha=alpha,
        sequential=sequential,
        n_star=n_star,
    )


def no_inference(
    code: ResultCode, *, margin: float, higher_is_better: bool, alpha: float, sequential: bool
) -> NonInferiority:
    """The result that carries only ``code`` (the options checked as every test checks them)."""
    if margin < 0:
        raise ValueError(f"margin must be ≥ 0, got {margin}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return NonInferiority(
        code=code,
        margin=margin,
        higher_is_better=higher_is_better,
        alpha=alpha,
        sequential=sequential,
    )


def estimates_non_inferiority(
    control: ArmEstimate,
    treatment: ArmEstimate,
    *,
    margin: float,
    higher_is_better: bool,
    alpha: float = 0.05,
    sequential: bool = False,
    n_star: float = DEFAULT_N_STAR,
) -> NonInferiority:
    """``non_inferiority`` on arm estimates already built (e.g. quantiles'); needs n ≥ 2."""
    empty = no_inference(
        ResultCode.OK,
        margin=margin,
        higher_is_better=higher_is_better,
        alpha=alpha,
        sequential=sequential,
    )
    if is_zero_baseline(control):
        return dataclasses.replace(empty, code=ResultCode.ZERO_BASELINE)
    lift, variance = relative_lift(control, treatment)
    if variance <= 0.0:
        return dataclasses.replace(empty, code=ResultCode.ZERO_VARIANCE, lift_rel=lift)
    # Distance from the margin towards the safe side: > 0 means "better than the margin".
    safe_distance = lift + margin if higher_is_better else margin - lift
    if sequential:
        n_total = control.n + treatment.n
        rho = tuning_rho(alpha, n_star)
        low, high = cs_interval(lift, variance, n_total, alpha, rho)
        bound = low if higher_is_better else high
        # The e-value tests "lift = −margin" (resp. +margin); on the harmful side nothing is shown.
        p_value = cs_p_value(safe_distance, variance, n_total, rho) if safe_distance > 0 else 1.0
    else:
        se = math.sqrt(variance)
        dof = welch_dof(control, treatment)
        half = t_ppf(1.0 - alpha, dof) * se
        bound = lift - half if higher_is_better else lift + half
        p_value = t_sf(safe_distance / se, dof)
    return dataclasses.replace(
        empty, lift_rel=lift, bound=bound, p_value=p_value, non_inferior=p_value < alpha
    )
