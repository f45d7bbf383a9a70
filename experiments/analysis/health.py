"""Experiment health checks: is the experiment itself sound enough to read its lifts?

Three kinds, each a ``HealthCheck`` with a status the gate acts on (``fail`` halts the rollout,
``warn`` is listed among its reasons):

- sample-ratio mismatch (SRM): users per arm against the weights, overall and per first-exposure
  language and IDE (attributes fixed before the variant could change anything), Holm-corrected
  across the slices of each kind;
- multiple exposures: users exposed to more than one arm, whom the analysis leaves out;
- shown rate: a variant that changes how often suggestions are displayed biases acceptance per
  shown suggestion (the population of shown suggestions differs between arms), so the check
  flags it and reports acceptance per opportunity (per served completion) beside it.

SQL returns user counts per (arm, language, IDE); the checks are pure functions of counts and of
the analysis' comparisons.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from typing import Literal

import sqlalchemy
from sqlalchemy import text

from experiments.analysis.exposures_sql import FIRST_EXPOSURES
from experiments.analysis.options import Correction
from experiments.analysis.stats.multiple import adjust_p_values
from experiments.analysis.stats.results import Comparison
from experiments.analysis.stats.srm import srm_p_value
from experiments.definitions.config import ExperimentConfig

# An SRM p-value below this halts the rollout: with the split broken, every other figure is
# suspect. Per slice it applies to the Holm-adjusted p-value.
SRM_THRESHOLD = 0.001
# Pearson's χ² is trusted when every arm expects at least this many users (the usual rule of
# thumb); smaller slices are not tested, and the check says which.
MIN_EXPECTED_USERS = 5.0
# Users exposed to more than one arm are left out of the analysis. Left out in proportion to
# nothing in particular, a share of 0.1 % moves any rate by at most about 0.1 % of itself, far
# below the lifts experiments are powered for; past it, exposure logging or assignment is likely
# broken (variants not sticky per user) and worth a look. Past 1 % the exclusion is as large as
# the effects being measured, and may itself differ between arms: the rollout stops.
MULTIPLE_EXPOSURES_WARN = 0.001
MULTIPLE_EXPOSURES_FAIL = 0.01
# ... but a handful of users is no evidence of a broken assignment (one shared laptop in a
# 50-user first stage is 2 %): below this many the check only warns.
MULTIPLE_EXPOSURES_FAIL_MIN_USERS = 10
# The shown-rate check is a warning that asks for a careful read, not a decision: unadjusted and
# two-sided, with the always-valid sequential p-value when there is one (the gate looks again and
# again), at a level stricter than the analysis' 0.05 so that it rarely fires by chance.
SHOWN_RATE_ALPHA = 0.01

SliceKind = Literal["language", "ide"]
Figure = float | int | str | None | Mapping[str, float]


class HealthStatus(enum.StrEnum):
    """How a check came out: ``fail`` halts a rollout, ``warn`` is shown with its decision."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


@dataclasses.dataclass(frozen=True)
class HealthCheck:
    """One check on one slice (a language, an IDE, a treatment arm; None for the whole)."""

    # srm, srm_language, srm_ide, multiple_exposures, shown_rate
    name: str
    slice: str | None
    status: HealthStatus
    # One line a person can act on, with the figures that decided it.
    reason: str
    figures: Mapping[str, Figure] = dataclasses.field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready (stored with gate decisions)."""
        return {
            "name": self.name,
            "slice": self.slice,
            "status": self.status.value,
            "reason": self.reason,
            "figures": {
                key: dict(value) if isinstance(value, Mapping) else value
                for key, value in self.figures.items()
            },
        }


# --- pure checks ----------------------------------------------------------------------------------


def srm_check(users_per_arm: Mapping[str, int], weights: Mapping[str, float]) -> HealthCheck:
    """The overall split of analysed users against the weights (the gate's SRM rule)."""
    observed = [users_per_arm.get(arm, 0) for arm in weights]
    figures: dict[str, Figure] = {"users": {arm: users_per_arm.get(arm, 0) for arm in weights}}
    if sum(observed) == 0:
        return HealthCheck("srm", None, HealthStatus.PASS, "no users exposed yet", figures)
    p = srm_p_value(observed, list(weights.values()))
    figures["p_value"] = p
    split = _split(users_per_arm, weights)
    if p < SRM_THRESHOLD:
        reason = f"sample ratio mismatch: {split} (χ² p = {p:.2g} < {SRM_THRESHOLD})"
        return HealthCheck("srm", None, HealthStatus.FAIL, reason, figures)
    return HealthCheck("srm", None, HealthStatus.PASS, f"split as weighted: {split}", figures)


def slice_srm_checks(
    kind: SliceKind, users: Mapping[str, Mapping[str, int]], weights: Mapping[str, float]
) -> list[HealthCheck]:
    """SRM per slice (``users``: slice → arm → analysed users), Holm-corrected across slices.

    Slices where some arm expects fewer than ``MIN_EXPECTED_USERS`` users are not tested; one
    passing check with no slice names them.
    """
    name = f"srm_{kind}"
    total_weight = sum(w for w in weights.values() if w > 0)
    tested: list[tuple[str, float]] = []
    skipped: list[str] = []
    for value, counts in sorted(users.items()):
        n = sum(counts.get(arm, 0) for arm in weights)
        expected = min(w / total_weight * n for w in weights.values() if w > 0)
        if expected < MIN_EXPECTED_USERS:
            skipped.append(f"{value} ({n} users)")
            continue
        tested.append(
            (value, srm_p_value([counts.get(arm, 0) for arm in weights], [*weights.values()]))
        )
    adjusted = adjust_p_values([p for _, p in tested], Correction.HOLM)
    checks = []
    for (value, p), p_adjusted in zip(tested, adjusted, strict=True):
        figures: dict[str, Figure] = {
            "p_value": p,
            "p_adjusted": p_adjusted,
            "slices_tested": len(tested),
            "users": {arm: users[value].get(arm, 0) for arm in weights},
        }
        where = f"{kind} {value}"
        corrected = f"χ² p = {p:.2g}, Holm-adjusted over {len(tested)} = {p_adjusted:.2g}"
        if p_adjusted < SRM_THRESHOLD:
            reason = (
                f"sample ratio mismatch in {where}: {_split(users[value], weights)} "
                f"({corrected} < {SRM_THRESHOLD})"
            )
            checks.append(HealthCheck(name, value, HealthStatus.FAIL, reason, figures))
        else:
            reason = f"split as weighted in {where} ({corrected})"
            checks.append(HealthCheck(name, value, HealthStatus.PASS, reason, figures))
    if skipped:
        reason = (
            f"not tested, too few users for χ² (an arm expects < {MIN_EXPECTED_USERS:g}): "
            f"{kind} {', '.join(skipped)}"
        )
        checks.append(HealthCheck(name, None, HealthStatus.PASS, reason, {"skipped": len(skipped)}))
    return checks


def multiple_exposures_check(*, multiple: int, exposed: int) -> HealthCheck:
    """Users exposed to more than one arm, out of every exposed user."""
    rate = multiple / exposed if exposed else 0.0
    figures: dict[str, Figure] = {"users": multiple, "exposed": exposed, "rate": rate}
    counted = f"{multiple} of {exposed} exposed users ({rate:.2%}) saw more than one arm"
    if rate > MULTIPLE_EXPOSURES_FAIL and multiple >= MULTIPLE_EXPOSURES_FAIL_MIN_USERS:
        status, limit = HealthStatus.FAIL, MULTIPLE_EXPOSURES_FAIL
    elif rate > MULTIPLE_EXPOSURES_WARN:
        status, limit = HealthStatus.WARN, MULTIPLE_EXPOSURES_WARN
    else:
        return HealthCheck(
            "multiple_exposures", None, HealthStatus.PASS, f"{counted}; left out", figures
        )
    reason = f"{counted}, above {limit:.1%}: left out of the analysis; check assignment"
    return HealthCheck("multiple_exposures", None, status, reason, figures)


def shown_rate_checks(
    display: Mapping[str, Comparison], per_opportunity: Mapping[str, Comparison]
) -> list[HealthCheck]:
    """Per treatment arm: does the arm change the display rate (shown / served)?"""
    checks = []
    for arm, comparison in display.items():
        # Too few effective users: the p-value is not trusted, as everywhere in the analysis.
        test = None if comparison.low_power else _test(comparison)
        figures: dict[str, Figure] = {
            "control_rate": comparison.control_mean,
            "treatment_rate": comparison.treatment_mean,
        }
        if test is None:
            why = "too few users" if comparison.low_power else comparison.code.value
            reason = f"display rate in {arm} not tested ({why})"
            checks.append(HealthCheck("shown_rate", arm, HealthStatus.PASS, reason, figures))
            continue
        lift, p, scale, sequential = test
        figures |= {"lift": lift, "lift_scale": scale, "p_value": p, "sequential": sequential}
        p_name = "sequential p" if sequential else "p"
        shown = f"display rate {_lift(lift, scale)} in {arm} ({p_name} = {p:.2g})"
        if p >= SHOWN_RATE_ALPHA:
            reason = f"{shown}: no significant change at {SHOWN_RATE_ALPHA:g}"
            checks.append(HealthCheck("shown_rate", arm, HealthStatus.PASS, reason, figures))
            continue
        other = per_opportunity.get(arm)
        if other is not None:
            figures |= _opportunity_figures(other)
        reason = (
            f"{shown}: acceptance per shown suggestion compares different suggestions, read it "
            f"with care; acceptance per opportunity {_opportunity(other)}"
        )
        checks.append(HealthCheck("shown_rate", arm, HealthStatus.WARN, reason, figures))
    return checks


def _test(comparison: Comparison) -> tuple[float, float, str, bool] | None:
    """(lift, p, scale, sequential): relative when defined, sequential p when there is one."""
    for scale, lift, seq_p, p in (
        ("rel", comparison.lift_rel, comparison.seq_p_rel, comparison.p_rel),
        ("abs", comparison.lift_abs, comparison.seq_p_abs, comparison.p_abs),
    ):
        chosen = seq_p if seq_p is not None else p
        if lift is not None and chosen is not None:
            return lift, chosen, scale, seq_p is not None
    return None


def _opportunity_figures(comparison: Comparison) -> dict[str, Figure]:
    ci = comparison.seq_ci_rel or comparison.ci_rel
    return {
        "per_opportunity_lift_rel": comparison.lift_rel,
        "per_opportunity_ci_low": ci[0] if ci else None,
        "per_opportunity_ci_high": ci[1] if ci else None,
        "per_opportunity_p_value": comparison.seq_p_rel
        if comparison.seq_p_rel is not None
        else comparison.p_rel,
    }


def _opportunity(comparison: Comparison | None) -> str:
    if comparison is None or comparison.lift_rel is None:
        return "not available"
    sequential = comparison.seq_ci_rel is not None
    ci = comparison.seq_ci_rel if sequential else comparison.ci_rel
    interval = (
        f", {'sequential ' if sequential else ''}CI [{ci[0]:+.1%}, {ci[1]:+.1%}]" if ci else ""
    )
    return f"{comparison.lift_rel:+.1%}{interval}"


def _lift(lift: float, scale: str) -> str:
    return f"{lift:+.1%}" if scale == "rel" else f"{lift:+.3g} (absolute)"


def _split(users: Mapping[str, int], weights: Mapping[str, float]) -> str:
    counts = ", ".join(f"{arm} {users.get(arm, 0)}" for arm in weights)
    shares = ", ".join(f"{w:g}" for w in weights.values())
    return f"users {counts} against weights {shares}"


# --- from the database ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExposureCounts:
    """Exposed users by their first exposure's arm, language and IDE (no per-user rows)."""

    # (arm, language, ide) → users exposed to that arm only (the analysed users).
    analysed: Mapping[tuple[str, str, str], int]
    # Users exposed to more than one arm, and every exposed user.
    multiple: int
    exposed: int

    def by(self, kind: SliceKind) -> dict[str, dict[str, int]]:
        """Analysed users per slice value and arm."""
        out: dict[str, dict[str, int]] = {}
        for (arm, language, ide), n in self.analysed.items():
            counts = out.setdefault(language if kind == "language" else ide, {})
            counts[arm] = counts.get(arm, 0) + n
        return out


def exposure_counts(
    conn: sqlalchemy.Connection, *, experiment: str, until: dt.date | None = None
) -> ExposureCounts:
    """Users per first-exposure (arm, language, IDE), and those exposed to several arms."""
    hi = dt.datetime.max.replace(tzinfo=dt.UTC)
    if until is not None:
        hi = dt.datetime.combine(until, dt.time(), dt.UTC)
    rows = conn.execute(
        text(
            f"WITH {FIRST_EXPOSURES} SELECT arm, language, ide, arms > 1 AS multiple, "
            "count(*) AS users FROM fx GROUP BY 1, 2, 3, 4"
        ),
        {"experiment": experiment, "hi": hi},
    ).all()
    analysed = {(r.arm, r.language, r.ide): int(r.users) for r in rows if not r.multiple}
    multiple = sum(int(r.users) for r in rows if r.multiple)
    return ExposureCounts(analysed, multiple, multiple + sum(analysed.values()))


def health_checks(
    conn: sqlalchemy.Connection,
    config: ExperimentConfig,
    *,
    users_per_arm: Mapping[str, int],
    display: Mapping[str, Comparison],
    per_opportunity: Mapping[str, Comparison],
    multiple_arm_users: int | None = None,
    until: dt.date | None = None,
) -> list[HealthCheck]:
    """Every health check of ``config``'s experiment.

    ``users_per_arm`` (the analysed users) and ``multiple_arm_users`` (those left out; counted
    here when None): the analysis' own counts, so the checks and the report agree; ``display``
    and ``per_opportunity``: per treatment arm, the overall comparisons of ``display_rate`` and
    ``acceptance_per_opportunity``; ``until`` as in ``analyze_experiment``.
    """
    weights = {arm.name: arm.weight for arm in config.arms}
    counts = exposure_counts(conn, experiment=config.key, until=until)
    multiple = counts.multiple if multiple_arm_users is None else multiple_arm_users
    exposed = sum(users_per_arm.values()) + multiple
    return [
        srm_check(users_per_arm, weights),
        *slice_srm_checks("language", counts.by("language"), weights),
        *slice_srm_checks("ide", counts.by("ide"), weights),
        multiple_exposures_check(multiple=multiple, exposed=exposed),
        *shown_rate_checks(display, per_opportunity),
    ]


def worst(checks: Sequence[HealthCheck]) -> HealthStatus:
    """The worst status among ``checks`` (pass when there are none)."""
    statuses = {check.status for check in checks}
    for status in (HealthStatus.FAIL, HealthStatus.WARN):
        if status in statuses:
            return status
    return HealthStatus.PASS
