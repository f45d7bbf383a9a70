"""Rollout gates: from an analysis and the rollout plan to advance / hold / roll back / halt.

The rules, in order (docs/statistics.md, Rollout gates):
1. halt when the split of users between arms does not match the weights (SRM χ² p < 0.001):
   every other figure is then suspect; halt too on any failed health check
   (``experiments.analysis.health``: SRM per language and IDE, multiple exposures);
2. roll back when a primary metric or a guardrail is significantly worse in some arm, judged by
   the always-valid sequential test, because gates look at the data again and again;
3. advance to the next stage when the current stage has its minimum users and has lasted its
   minimum duration, and every guardrail is shown non-inferior within its margin;
4. otherwise hold.
Every decision carries its reasons in words and figures, health warnings among them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Sequence

from experiments.analysis.health import SRM_THRESHOLD, HealthCheck, HealthStatus
from experiments.definitions.config import ExperimentConfig, Stage


class Decision(enum.StrEnum):
    """What a gate decides for an experiment."""

    ADVANCE = "advance"
    HOLD = "hold"
    ROLLBACK = "rollback"
    HALT = "halt"


@dataclasses.dataclass(frozen=True)
class MetricVerdict:
    """One metric in one treatment arm, as the gate needs it."""

    metric: str
    arm: str
    language: str | None
    # The sequential (always-valid) test says the arm is worse, at the gate's alpha.
    significantly_worse: bool
    lift_rel: float | None
    seq_ci_rel: tuple[float, float] | None
    seq_p: float | None


@dataclasses.dataclass(frozen=True)
class GuardrailVerdict:
    """A guardrail's non-inferiority test in one treatment arm."""

    metric: str
    arm: str
    margin: float
    non_inferior: bool
    lift_rel: float | None
    p_value: float | None


@dataclasses.dataclass(frozen=True)
class GateInput:
    """What the gate reads from an analysis."""

    users_per_arm: dict[str, int]
    srm_p_value: float | None
    primary: Sequence[MetricVerdict]
    guardrail_tests: Sequence[MetricVerdict]
    non_inferiority: Sequence[GuardrailVerdict]
    health: Sequence[HealthCheck] = ()


@dataclasses.dataclass(frozen=True)
class GateDecision:
    """A decision, the coverage it moves to (if any) and why."""

    decision: Decision
    reasons: tuple[str, ...]
    coverage: float
    next_coverage: float | None
    stage: int | None
    # The health checks the decision was made with (stored and shown beside it).
    health: tuple[HealthCheck, ...] = ()

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready form (for storage and the CLI)."""
        return {
            "decision": self.decision.value,
            "reasons": list(self.reasons),
            "coverage": self.coverage,
            "next_coverage": self.next_coverage,
            "stage": self.stage,
            "health": [check.to_dict() for check in self.health],
        }


def current_stage(stages: Sequence[Stage], coverage: float) -> int | None:
    """Index of the last stage whose coverage the experiment has reached, or None before any."""
    reached = [index for index, stage in enumerate(stages) if stage.coverage <= coverage + 1e-12]
    return reached[-1] if reached else None


def evaluate(
    *,
    config: ExperimentConfig,
    coverage: float,
    stage_started_at: dt.datetime,
    now: dt.datetime,
    data: GateInput,
) -> GateDecision:
    """Decide for one experiment at ``now``; pure, so it can be tested without a database."""
    stages = config.rollout.stages
    stage = current_stage(stages, coverage)

    health = tuple(data.health)
    # Warnings do not decide anything, but every decision lists them so nobody reads a lift
    # without them.
    warnings = [
        f"health warning: {check.reason}" for check in health if check.status is HealthStatus.WARN
    ]

    def decided(decision: Decision, reasons: list[str], to: float | None = None) -> GateDecision:
        return GateDecision(decision, (*reasons, *warnings), coverage, to, stage, health)

    halts: list[str] = []
    srm_failed = data.srm_p_value is not None and data.srm_p_value < SRM_THRESHOLD
    if data.srm_p_value is not None and srm_failed:
        split = ", ".join(f"{arm} {n}" for arm, n in data.users_per_arm.items())
        weights = ", ".join(f"{arm.name} {arm.weight:g}" for arm in config.arms)
        halts.append(
            f"sample ratio mismatch: users {split} against weights {weights} "
            f"(χ² p = {data.srm_p_value:.2g} < {SRM_THRESHOLD})"
        )
    halts += [
        f"health check failed: {check.reason}"
        for check in health
        # The overall SRM check is the rule above, said once.
        if check.status is HealthStatus.FAIL and not (srm_failed and check.name == "srm")
    ]
    if halts:
        return decided(Decision.HALT, halts)

    worse = [v for v in (*data.primary, *data.guardrail_tests) if v.significantly_worse]
    if worse:
        return decided(Decision.ROLLBACK, [_worse_reason(v) for v in worse], 0.0)

    reasons: list[str] = []
    failing_guardrails = [g for g in data.non_inferiority if not g.non_inferior]
    reasons += [_not_shown_reason(g) for g in failing_guardrails]
    next_index = 0 if stage is None else stage + 1
    if next_index >= len(stages):
        reasons.append(f"at the last stage (coverage {coverage:g}); nothing to advance to")
        return decided(Decision.HOLD, reasons)
    if stage is not None:
        current = stages[stage]
        smallest = min(data.users_per_arm.values(), default=0)
        if smallest < current.min_users:
            reasons.append(
                f"stage {stage + 1} needs {current.min_users} users per arm, "
                f"the smallest arm has {smallest}"
            )
        elapsed = (now - stage_started_at).total_seconds()
        if elapsed < current.min_duration_s:
            reasons.append(
                f"stage {stage + 1} must last {_hours(current.min_duration_s)}, "
                f"it has run {_hours(elapsed)}"
            )
    if reasons:
        return decided(Decision.HOLD, reasons)
    target = stages[next_index].coverage
    passed = [
        f"{g.metric} non-inferior in {g.arm} within {g.margin:.0%} (p = {g.p_value:.3g})"
        for g in data.non_inferiority
        if g.p_value is not None
    ]
    return decided(
        Decision.ADVANCE,
        [f"stage {next_index + 1}: coverage {coverage:g} → {target:g}", *passed],
        target,
    )


def _worse_reason(verdict: MetricVerdict) -> str:
    where = f" ({verdict.language})" if verdict.language else ""
    lift = f"{verdict.lift_rel:+.1%}" if verdict.lift_rel is not None else "n/a"
    ci = (
        f", sequential CI [{verdict.seq_ci_rel[0]:+.1%}, {verdict.seq_ci_rel[1]:+.1%}]"
        if verdict.seq_ci_rel
        else ""
    )
    p = f", p = {verdict.seq_p:.2g}" if verdict.seq_p is not None else ""
    return f"{verdict.metric} is significantly worse in {verdict.arm}{where}: {lift}{ci}{p}"


def _not_shown_reason(verdict: GuardrailVerdict) -> str:
    lift = f"{verdict.lift_rel:+.1%}" if verdict.lift_rel is not None else "no data"
    p = f", p = {verdict.p_value:.2g}" if verdict.p_value is not None else ""
    return (
        f"guardrail {verdict.metric} not yet shown non-inferior in {verdict.arm} "
        f"within {verdict.margin:.0%}: {lift}{p}"
    )


def _hours(seconds: float) -> str:
    if seconds >= 86_400:
        return f"{seconds / 86_400:.1f} d"
    return f"{seconds / 3600:.1f} h"
