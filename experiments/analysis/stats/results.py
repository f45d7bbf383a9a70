"""Result codes and the frozen result types the statistics return."""

from __future__ import annotations

import dataclasses
import enum

Interval = tuple[float, float]


class ResultCode(enum.StrEnum):
    """Why a comparison has (or lacks) inference; degenerate data gets a code, never NaN."""

    OK = "ok"
    # An arm has no users at all.
    NO_USERS = "no_users"
    # An arm has a single user: no sample variance (n < 2).
    TOO_FEW_USERS = "too_few_users"
    # A ratio metric whose denominator sums to 0 in an arm: the metric is undefined there.
    ZERO_DENOMINATOR = "zero_denominator"
    # Both arms are constant, so the lift has no standard error.
    ZERO_VARIANCE = "zero_variance"
    # The control mean is 0: absolute lift is reported, relative lift is undefined.
    ZERO_BASELINE = "zero_baseline"
    # A proportion with a constant arm (0 % or 100 %): Fisher's exact test gives the p-value,
    # no interval (the normal approximation would claim certainty about that arm).
    EXACT_TEST = "exact_test"
    # Bootstrap (per-sample scores, e.g. backtests): nothing to resample, or a single sample.
    NO_SAMPLES = "no_samples"
    TOO_FEW_SAMPLES = "too_few_samples"


@dataclasses.dataclass(frozen=True, slots=True)
class Comparison:
    """One metric, control vs one treatment arm.

    Means are the unadjusted arm means; lifts, standard errors, CIs and p-values use the CUPED-
    adjusted estimates when ``cuped_applied``. Relative lift is treatment / control − 1.
    The absolute test is filled whenever its variance is > 0, the relative test whenever the
    control mean is ≠ 0 and its variance is > 0; ``code`` names the first reason one is missing
    (``ZERO_BASELINE`` or ``ZERO_VARIANCE`` may come with a valid absolute test).
    """

    code: ResultCode
    control_n: int
    treatment_n: int
    alpha: float
    control_mean: float | None = None
    treatment_mean: float | None = None
    # Welch–Satterthwaite degrees of freedom, shared by the absolute and relative tests.
    dof: float | None = None
    lift_abs: float | None = None
    se_abs: float | None = None
    ci_abs: Interval | None = None
    p_abs: float | None = None
    lift_rel: float | None = None
    se_rel: float | None = None
    ci_rel: Interval | None = None
    p_rel: float | None = None
    # Always-valid confidence sequence and p-values, filled when asked for (sequential=True).
    n_star: float | None = None
    seq_ci_abs: Interval | None = None
    seq_p_abs: float | None = None
    seq_ci_rel: Interval | None = None
    seq_p_rel: float | None = None
    # P(treatment is better), "better" in the metric's direction.
    chance_to_win: float | None = None
    cuped_applied: bool = False
    # 1 − var(adjusted absolute lift) / var(unadjusted absolute lift), when CUPED was applied.
    variance_reduction: float | None = None
    # An arm has fewer users than the caller's minimum: the test is shown but not trusted (with
    # heavy-tailed users the delta-method / CUPED standard errors are too small at a few dozen
    # users per arm), so a multiple-comparison family leaves it out.
    low_power: bool = False

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready values: the code as its string, intervals as lists."""
        out: dict[str, object] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, ResultCode):
                value = value.value
            elif isinstance(value, tuple):
                value = list(value)
            out[field.name] = value
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class NonInferiority:
    """One-sided test that treatment is not worse than control by more than a relative margin.

    ``bound`` is the one-sided (1 − α) confidence bound of the relative lift on the harmful
    side: a lower bound when higher is better, an upper bound otherwise. ``non_inferior`` holds
    exactly when ``p_value < alpha``, i.e. when the bound is on the safe side of the margin.
    """

    code: ResultCode
    margin: float
    higher_is_better: bool
    alpha: float
    # Whether the bound and p-value are always-valid (confidence sequence) or fixed-horizon.
    sequential: bool = False
    lift_rel: float | None = None
    bound: float | None = None
    p_value: float | None = None
    non_inferior: bool = False

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready values."""
        out = dataclasses.asdict(self)
        out["code"] = self.code.value
        return out
