"""Heavy-tailed, user-clustered fleets as arrays, for seeded A/A and coverage simulations.

Real fleets are not Poisson: a few developers trigger completions all day, most a few times,
and each has a propensity of their own. Per user (``HeavyTailedFleet``):

- activity λ ~ Gamma(shape, scale) (a Gamma-Poisson, i.e. negative-binomial, count: shape 0.5
  gives a long right tail, the top 1 % of users carrying ~9 % of the suggestions);
- shown ~ Poisson(λ); acceptance propensity ~ Beta(a, b); accepted ~ Binomial(shown, p);
- persistence checks reached at 30 s ~ Binomial(accepted, 0.9); kept ~ Binomial(reached, q),
  q ~ Beta(4, 2) per user;
- typing: manual chars ~ Gamma-Poisson as well, AI chars ~ Poisson(40 per accepted).

``user_values`` returns each metric's per-user numerator and denominator (the denominator is
None for the mean metric), ``capped`` applies the SQL's capping rule
(``experiments.analysis.moments_sql.metric_values``) to arrays, and ``moments`` makes the
sufficient statistics ``experiments.analysis.stats.compare`` consumes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt

from experiments.analysis.stats.compare import compare
from experiments.analysis.stats.estimates import effective_users
from experiments.analysis.stats.moments import MeanMoments, RatioMoments

FloatArray = npt.NDArray[np.float64]
UserValues = tuple[FloatArray, FloatArray | None]
# The primary metrics a simulation judges: one of each shape the catalog has.
UserMoments = MeanMoments | RatioMoments
SIMULATED_METRICS = ("acceptance_rate", "cpr_30", "pct_code_written", "suggestions_per_user")


@dataclasses.dataclass(frozen=True)
class HeavyTailedFleet:
    """The distributions users are drawn from."""

    activity_shape: float = 0.5
    activity_scale: float = 30.0
    propensity: tuple[float, float] = (1.5, 2.5)
    typing_shape: float = 0.6
    typing_scale: float = 2000.0


def user_values(
    rng: np.random.Generator,
    users: int,
    fleet: HeavyTailedFleet = HeavyTailedFleet(),
    *,
    acceptance_lift: float = 0.0,
) -> dict[str, UserValues]:
    """Per-user (m, d) of every simulated metric for ``users`` users.

    ``acceptance_lift`` multiplies every user's acceptance propensity (capped at 1): a true
    relative effect on the acceptance rate of exactly that size when no propensity is capped.
    """
    activity = rng.gamma(fleet.activity_shape, fleet.activity_scale, size=users)
    shown = rng.poisson(activity).astype(np.float64)
    propensity = rng.beta(*fleet.propensity, size=users) * (1.0 + acceptance_lift)
    accepted = rng.binomial(shown.astype(np.int64), np.minimum(propensity, 1.0))
    reached = rng.binomial(accepted, 0.9)
    kept = rng.binomial(reached, rng.beta(4.0, 2.0, size=users))
    typed = rng.poisson(rng.gamma(fleet.typing_shape, fleet.typing_scale, size=users))
    ai_chars = rng.poisson(40.0 * accepted)
    return {
        "acceptance_rate": (as_float(accepted), shown),
        "cpr_30": (as_float(kept), as_float(reached)),
        "pct_code_written": (as_float(ai_chars), as_float(typed + ai_chars)),
        "suggestions_per_user": (shown, None),
    }


def as_float(values: npt.ArrayLike) -> FloatArray:
    """``values`` as float64 (the moments are float sums)."""
    return np.asarray(values, dtype=np.float64)


def capped(
    values: UserValues, percentile: float | None, *, absolute: float | None = None
) -> UserValues:
    """The SQL's cap: at the ``percentile`` of the users' positive values, or at ``absolute``
    (neither: no cap).

    Mean metric: m capped. Ratio metric: d capped and m scaled by the same factor.
    """
    m, d = values
    weight = m if d is None else d
    if absolute is not None:
        cap = absolute
    elif percentile is not None:
        positive = weight[weight > 0]
        if positive.size == 0:
            return values
        # percentile_disc: the smallest value whose cumulative share is >= the percentile.
        cap = float(np.quantile(positive, percentile, method="inverted_cdf"))
    else:
        return values
    if d is None:
        return np.minimum(m, cap), None
    factor = np.where(d > cap, cap / np.where(d > 0, d, 1.0), 1.0)
    return m * factor, np.minimum(d, cap)


def moments(values: UserValues, active: npt.NDArray[np.bool_] | None = None) -> UserMoments:
    """Sufficient statistics of per-user values; a mean metric counts ``active`` users only."""
    m, d = values
    if d is None:
        kept = m if active is None else m[active]
        return MeanMoments(int(kept.size), float(kept.sum()), float((kept * kept).sum()))
    return RatioMoments(
        n=int(m.size),
        m_sum=float(m.sum()),
        m_sum_squares=float((m * m).sum()),
        d_sum=float(d.sum()),
        d_sum_squares=float((d * d).sum()),
        md_sum=float((m * d).sum()),
        m2d_sum=float((m * m * d).sum()),
        md2_sum=float((m * d * d).sum()),
        d3_sum=float((d * d * d).sum()),
    )


def simulate_comparisons(
    users: int, experiments: int, percentile: float | None, seed: int, lift: float = 0.0
) -> dict[str, dict[str, Any]]:
    """Per metric: rejections, coverage and effective users of ``experiments`` seeded A/A
    experiments (A/B with ``lift`` on acceptance), capped at ``percentile`` (None: gbstats'
    test, uncapped, no small-sample correction) as the analysis caps: on the pooled arms."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, Any]] = {
        m: {"reject": [], "cover": [], "effective": []} for m in SIMULATED_METRICS
    }
    for _ in range(experiments):
        control = user_values(rng, users)
        treatment = user_values(rng, users, acceptance_lift=lift)
        active_c = control["suggestions_per_user"][0] > 0
        active_t = treatment["suggestions_per_user"][0] > 0
        for metric in SIMULATED_METRICS:
            truth = lift if metric == "acceptance_rate" else 0.0
            if metric != "acceptance_rate" and lift:
                continue
            pooled_m = np.concatenate([control[metric][0], treatment[metric][0]])
            d_c, d_t = control[metric][1], treatment[metric][1]
            pooled_d = None if d_c is None or d_t is None else np.concatenate([d_c, d_t])
            active = np.concatenate([active_c, active_t])
            if pooled_d is None:
                # The mean metric counts active users, and its cap is theirs.
                pooled_m = pooled_m[active]
                split = int(active_c.sum())
            else:
                split = users
            m, d = capped((pooled_m, pooled_d), percentile)
            arm_c = moments((m[:split], None if d is None else d[:split]))
            arm_t = moments((m[split:], None if d is None else d[split:]))
            result = compare(arm_c, arm_t, small_sample=percentile is not None)
            if result.p_rel is None or result.ci_rel is None:
                continue
            out[metric]["reject"].append(result.p_rel < 0.05)
            out[metric]["cover"].append(result.ci_rel[0] <= truth <= result.ci_rel[1])
            out[metric]["effective"].append(min(effective_users(arm_c), effective_users(arm_t)))
    return out


def rates(
    found: dict[str, dict[str, Any]], min_effective: float = 0.0
) -> dict[str, dict[str, float]]:
    """Per metric: the false-positive rate and coverage over rows judged (effective ≥ min)."""
    table = {}
    for metric, rows in found.items():
        judged = np.asarray(rows["effective"]) >= min_effective
        if not judged.any():
            continue
        table[metric] = {
            "rejection_rate": round(float(np.asarray(rows["reject"])[judged].mean()), 4),
            "coverage": round(float(np.asarray(rows["cover"])[judged].mean()), 4),
            "judged_share": round(float(judged.mean()), 3),
            "median_effective_users": round(float(np.median(rows["effective"])), 1),
        }
    return table
