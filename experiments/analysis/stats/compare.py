"""The per-(metric, arm, language) entry point: control vs one treatment arm."""

from __future__ import annotations

import dataclasses
import math

from experiments.analysis.options import DEFAULT_N_STAR
from experiments.analysis.stats.bayesian import chance_to_win
from experiments.analysis.stats.cuped import cuped_estimates
from experiments.analysis.stats.estimates import (
    ArmEstimate,
    arm_mean,
    check_arm,
    effective_users,
    estimate,
    is_zero_baseline,
    post_period,
    small_sample_corrected,
)
from experiments.analysis.stats.exact import fisher_exact_p
from experiments.analysis.stats.frequentist import absolute_lift, relative_lift, t_test, welch_dof
from experiments.analysis.stats.moments import CupedMeanMoments, CupedRatioMoments, Moments
from experiments.analysis.stats.results import Comparison, ResultCode
from experiments.analysis.stats.sequential import cs_interval, cs_p_value, tuning_rho


@dataclasses.dataclass(frozen=True, slots=True)
class Prepared:
    """Arm estimates ready for testing, or the code that stops inference (arms None)."""

    code: ResultCode
    control: ArmEstimate | None = None
    treatment: ArmEstimate | None = None
    cuped_applied: bool = False
    # 1 − var(adjusted absolute lift) / var(unadjusted absolute lift).
    variance_reduction: float | None = None


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def prepare(
    control: Moments,
    treatment: Moments,
    *,
    cuped: bool = True,
    proportion: bool = False,
    small_sample: bool = False,
) -> Prepared:
    """Validate both arms and build their (CUPED-adjusted when possible) estimates, with the
    heavy-user small-sample correction (``estimates.small_sample_corrected``) if asked."""
    if type(control) is not type(treatment):
        raise TypeError(
            f"control is {type(control).__name__} but treatment is {type(treatment).__name__}"
        )
    codes = (check_arm(control), check_arm(treatment))
    for code in (ResultCode.NO_USERS, ResultCode.TOO_FEW_USERS, ResultCode.ZERO_DENOMINATOR):
        if code in codes:
            return Prepared(code)
    plain_c = estimate(post_period(control), proportion=proportion)
    plain_t = estimate(post_period(treatment), proportion=proportion)
    arm_c, arm_t = plain_c, plain_t
    applied = False
    reduction: float | None = None
    with_pre = (CupedMeanMoments, CupedRatioMoments)
    if cuped and isinstance(control, with_pre) and isinstance(treatment, with_pre):
        adjusted = cuped_estimates(control, treatment)
        if adjusted is not None:
            arm_c, arm_t, applied = adjusted.control, adjusted.treatment, True
            _, var_plain = absolute_lift(plain_c, plain_t)
            _, var_adjusted = absolute_lift(arm_c, arm_t)
            if var_plain > 0.0:
                reduction = 1.0 - var_adjusted / var_plain
    if small_sample:
        arm_c = small_sample_corrected(arm_c, control)
        arm_t = small_sample_corrected(arm_t, treatment)
    return Prepared(ResultCode.OK, arm_c, arm_t, applied, reduction)


def compare(
    control: Moments,
    treatment: Moments,
    *,
    alpha: float = 0.05,
    relative: bool = True,
    sequential: bool = False,
    n_star: float = DEFAULT_N_STAR,
    cuped: bool = True,
    proportion: bool = False,
    higher_is_better: bool = True,
    min_effective_users: float = 0.0,
    small_sample: bool = False,
) -> Comparison:
    """Welch t-test (and optionally the confidence sequence) of treatment vs control.

    ``relative`` picks the lift the chance to win is computed on; both lifts are always tested.
    ``proportion`` treats a MeanMoments as 0/1 values with variance p(1 − p). CUPED applies when
    the moments carry a pre-period and ``cuped`` is set. ``higher_is_better`` only orients the
    chance to win. An arm with fewer than ``min_effective_users`` effective users
    (``effective_users``) marks the result ``low_power``: still computed, but left out of
    ``adjust``'s family (never significant). ``small_sample`` applies the heavy-user
    correction of the variance and degrees of freedom (the analysis does whenever it caps;
    without it the results are gbstats' exactly). A proportion with a constant arm (0 % or
    100 %) has no usable variance there: Fisher's exact test gives its p-value (``EXACT_TEST``).
    """
    _check_alpha(alpha)
    if n_star <= 0:
        raise ValueError(f"n_star must be > 0, got {n_star}")
    prepared = prepare(
        control, treatment, cuped=cuped, proportion=proportion, small_sample=small_sample
    )
    base = Comparison(
        code=prepared.code,
        control_n=control.n,
        treatment_n=treatment.n,
        alpha=alpha,
        control_mean=arm_mean(control),
        treatment_mean=arm_mean(treatment),
        cuped_applied=prepared.cuped_applied,
        variance_reduction=prepared.variance_reduction,
        low_power=min(effective_users(control), effective_users(treatment)) < min_effective_users,
    )
    arm_c, arm_t = prepared.control, prepared.treatment
    if arm_c is None or arm_t is None:
        return base
    if proportion and (arm_c.variance == 0.0 or arm_t.variance == 0.0):
        # A normal approximation with one arm's variance 0 claims certainty about that arm:
        # 0/10 against 2/10 would give p 0.007, where the exact test gives 0.47.
        p_exact = fisher_exact_p(arm_c, arm_t)
        lift_rel = None if is_zero_baseline(arm_c) else relative_lift(arm_c, arm_t)[0]
        return _replace(
            base,
            code=ResultCode.EXACT_TEST,
            lift_abs=absolute_lift(arm_c, arm_t)[0],
            p_abs=p_exact,
            lift_rel=lift_rel,
            p_rel=p_exact if lift_rel is not None else None,
        )
    return compare_estimates(
        base,
        arm_c,
        arm_t,
        alpha=alpha,
        relative=relative,
        sequential=sequential,
        n_star=n_star,
        higher_is_better=higher_is_better,
    )


def compare_estimates(
    base: Comparison,
    arm_c: ArmEstimate,
    arm_t: ArmEstimate,
    *,
    alpha: float,
    relative: bool = True,
    sequential: bool = False,
    n_star: float = DEFAULT_N_STAR,
    higher_is_better: bool = True,
) -> Comparison:
    """The tests of ``compare`` on arm estimates already built (``base`` carries the counts and
    means): absolute and relative Welch tests, the confidence sequences, the chance to win."""
    lift_abs, var_abs = absolute_lift(arm_c, arm_t)
    has_baseline = not is_zero_baseline(arm_c)
    lift_rel, var_rel = relative_lift(arm_c, arm_t) if has_baseline else (None, 0.0)
    if var_abs <= 0.0:
        # Both arms constant: point estimates only.
        return _replace(base, code=ResultCode.ZERO_VARIANCE, lift_abs=lift_abs, lift_rel=lift_rel)

    dof = welch_dof(arm_c, arm_t)
    n_total = arm_c.n + arm_t.n
    rho = tuning_rho(alpha, n_star)
    abs_test = t_test(lift_abs, var_abs, dof, alpha)
    fields: dict[str, object] = {
        "dof": dof,
        "lift_abs": lift_abs,
        "se_abs": abs_test.se,
        "ci_abs": abs_test.ci,
        "p_abs": abs_test.p_value,
    }
    if sequential:
        fields["n_star"] = n_star
        fields["seq_ci_abs"] = cs_interval(lift_abs, var_abs, n_total, alpha, rho)
        fields["seq_p_abs"] = cs_p_value(lift_abs, var_abs, n_total, rho)
    win_estimate, win_se = lift_abs, abs_test.se
    if lift_rel is None:
        fields["code"] = ResultCode.ZERO_BASELINE
    elif var_rel <= 0.0:
        # Treatment constant at 0: μt/μc is exactly 0 to first order, so no relative test.
        fields["code"] = ResultCode.ZERO_VARIANCE
        fields["lift_rel"] = lift_rel
    else:
        rel_test = t_test(lift_rel, var_rel, dof, alpha)
        fields |= {
            "lift_rel": lift_rel,
            "se_rel": rel_test.se,
            "ci_rel": rel_test.ci,
            "p_rel": rel_test.p_value,
        }
        if sequential:
            fields["seq_ci_rel"] = cs_interval(lift_rel, var_rel, n_total, alpha, rho)
            fields["seq_p_rel"] = cs_p_value(lift_rel, var_rel, n_total, rho)
        if relative:
            win_estimate, win_se = lift_rel, math.sqrt(var_rel)
    fields["chance_to_win"] = chance_to_win(win_estimate, win_se, higher_is_better=higher_is_better)
    return _replace(base, **fields)


def _replace(base: Comparison, **fields: object) -> Comparison:
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]
