"""Gate decisions from analysis figures and the rollout plan (pure; no database)."""

from __future__ import annotations

import datetime as dt

import pytest

from codelift.commands.analysis import _print
from experiments.analysis.gates import (
    Decision,
    GateInput,
    GuardrailVerdict,
    MetricVerdict,
    current_stage,
    evaluate,
)
from experiments.analysis.health import HealthCheck, HealthStatus
from experiments.definitions.config import ExperimentConfig
from tests.experiment_definitions import config

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def plan() -> ExperimentConfig:
    return config(
        "gated",
        rollout={
            "stages": [
                {"coverage": 0.01, "min_users": 100, "min_duration_s": "1d"},
                {"coverage": 0.05, "min_users": 500, "min_duration_s": "2d"},
                {"coverage": 1.0},
            ]
        },
        guardrails=[{"metric": "latency_p95", "margin": 0.1}],
    )


def verdict(metric: str = "acceptance_rate", *, worse: bool = False) -> MetricVerdict:
    return MetricVerdict(
        metric=metric,
        arm="lora",
        language=None,
        significantly_worse=worse,
        lift_rel=-0.12 if worse else 0.03,
        seq_ci_rel=(-0.2, -0.04) if worse else (-0.02, 0.08),
        seq_p=0.001 if worse else 0.4,
    )


def guardrail(*, non_inferior: bool = True) -> GuardrailVerdict:
    return GuardrailVerdict(
        metric="latency_p95",
        arm="lora",
        margin=0.1,
        non_inferior=non_inferior,
        lift_rel=0.01,
        p_value=0.001 if non_inferior else 0.3,
    )


def data(
    *,
    users: tuple[int, int] = (1000, 1000),
    srm: float = 0.5,
    primary: tuple[MetricVerdict, ...] = (),
    guardrails: tuple[MetricVerdict, ...] = (),
    non_inferiority: tuple[GuardrailVerdict, ...] = (),
    health: tuple[HealthCheck, ...] = (),
) -> GateInput:
    return GateInput(
        users_per_arm={"control": users[0], "lora": users[1]},
        srm_p_value=srm,
        primary=primary or (verdict(),),
        guardrail_tests=guardrails,
        non_inferiority=non_inferiority or (guardrail(),),
        health=health,
    )


def check(name: str, status: HealthStatus, reason: str, where: str | None = None) -> HealthCheck:
    return HealthCheck(name, where, status, reason, {"p_value": 0.5})


PASSING = check("srm", HealthStatus.PASS, "split as weighted")
SLICE_SRM = check("srm_language", HealthStatus.FAIL, "sample ratio mismatch in python", "python")
SHOWN = check("shown_rate", HealthStatus.WARN, "display rate +20.0% in lora", "lora")


def decide(coverage: float, since: dt.timedelta, gate_input: GateInput) -> tuple[Decision, str]:
    decision = evaluate(
        config=plan(), coverage=coverage, stage_started_at=NOW - since, now=NOW, data=gate_input
    )
    return decision.decision, " | ".join(decision.reasons)


def test_sample_ratio_mismatch_halts_before_anything_else() -> None:
    decision, reasons = decide(0.05, 10 * DAY, data(srm=0.0002, primary=(verdict(worse=True),)))
    assert decision is Decision.HALT
    assert "sample ratio mismatch" in reasons
    assert "control 1000, lora 1000" in reasons and "0.0002" in reasons


@pytest.mark.parametrize("which", ["primary", "guardrail"])
def test_a_significantly_worse_metric_rolls_back(which: str) -> None:
    worse = verdict("latency_mean" if which == "guardrail" else "acceptance_rate", worse=True)
    gate_input = data(primary=(worse,)) if which == "primary" else data(guardrails=(worse,))
    result = evaluate(
        config=plan(), coverage=0.05, stage_started_at=NOW - DAY, now=NOW, data=gate_input
    )
    assert result.decision is Decision.ROLLBACK
    assert result.next_coverage == 0.0
    assert f"{worse.metric} is significantly worse in lora: -12.0%" in result.reasons[0]


def test_advances_when_users_duration_and_guardrails_are_met() -> None:
    result = evaluate(
        config=plan(), coverage=0.01, stage_started_at=NOW - 2 * DAY, now=NOW, data=data()
    )
    assert result.decision is Decision.ADVANCE
    assert (result.stage, result.next_coverage) == (0, 0.05)
    assert result.reasons[0] == "stage 2: coverage 0.01 → 0.05"
    assert "latency_p95 non-inferior in lora within 10%" in result.reasons[1]


def test_holds_until_the_stage_has_its_users_per_arm() -> None:
    decision, reasons = decide(0.05, 3 * DAY, data(users=(900, 499)))
    assert decision is Decision.HOLD
    assert reasons == "stage 2 needs 500 users per arm, the smallest arm has 499"


def test_holds_until_the_stage_has_lasted_its_duration() -> None:
    decision, reasons = decide(0.05, dt.timedelta(hours=30), data())
    assert decision is Decision.HOLD
    assert reasons == "stage 2 must last 2.0 d, it has run 1.2 d"


def test_holds_while_a_guardrail_is_not_shown_non_inferior() -> None:
    decision, reasons = decide(
        0.05, 3 * DAY, data(non_inferiority=(guardrail(non_inferior=False),))
    )
    assert decision is Decision.HOLD
    assert "guardrail latency_p95 not yet shown non-inferior in lora within 10%" in reasons


def test_holds_at_the_last_stage() -> None:
    decision, reasons = decide(1.0, 30 * DAY, data())
    assert decision is Decision.HOLD
    assert "at the last stage" in reasons


@pytest.mark.parametrize(
    ("coverage", "stage"), [(0.0, None), (0.01, 0), (0.03, 0), (0.05, 1), (1.0, 2)]
)
def test_current_stage_is_the_last_one_reached(coverage: float, stage: int | None) -> None:
    assert current_stage(plan().rollout.stages, coverage) == stage


def test_a_failed_health_check_halts_before_a_rollback() -> None:
    gate_input = data(primary=(verdict(worse=True),), health=(PASSING, SLICE_SRM, SHOWN))
    result = evaluate(
        config=plan(), coverage=0.05, stage_started_at=NOW - DAY, now=NOW, data=gate_input
    )
    assert result.decision is Decision.HALT
    assert result.reasons == (
        "health check failed: sample ratio mismatch in python",
        "health warning: display rate +20.0% in lora",
    )
    assert result.health == (PASSING, SLICE_SRM, SHOWN)
    assert result.to_dict()["health"] == [c.to_dict() for c in (PASSING, SLICE_SRM, SHOWN)]


def test_the_overall_srm_rule_and_its_check_are_said_once() -> None:
    failed = check("srm", HealthStatus.FAIL, "sample ratio mismatch: users control 1000")
    decision, reasons = decide(0.05, 10 * DAY, data(srm=0.0002, health=(failed, SLICE_SRM)))
    assert decision is Decision.HALT
    assert reasons.count("sample ratio mismatch: users control 1000") == 1
    assert "health check failed: sample ratio mismatch in python" in reasons


@pytest.mark.parametrize(
    ("coverage", "since", "gate_input", "expected"),
    [
        (0.05, DAY, data(primary=(verdict(worse=True),)), Decision.ROLLBACK),
        (0.05, DAY, data(), Decision.HOLD),
        (0.01, 2 * DAY, data(), Decision.ADVANCE),
    ],
)
def test_warnings_are_listed_with_any_decision_and_decide_nothing(
    coverage: float, since: dt.timedelta, gate_input: GateInput, expected: Decision
) -> None:
    warned = data(primary=tuple(gate_input.primary), health=(PASSING, SHOWN))
    result = evaluate(
        config=plan(), coverage=coverage, stage_started_at=NOW - since, now=NOW, data=warned
    )
    plain = evaluate(
        config=plan(), coverage=coverage, stage_started_at=NOW - since, now=NOW, data=gate_input
    )
    assert result.decision is plain.decision is expected
    assert result.reasons == (*plain.reasons, "health warning: display rate +20.0% in lora")


def test_the_cli_prints_the_checks_failing_first(capsys: pytest.CaptureFixture[str]) -> None:
    result = evaluate(
        config=plan(),
        coverage=0.05,
        stage_started_at=NOW - DAY,
        now=NOW,
        data=data(health=(PASSING, SHOWN, SLICE_SRM)),
    )
    _print("gated", result, applied=False)
    assert capsys.readouterr().out.splitlines() == [
        "gated: halt",
        "  - health check failed: sample ratio mismatch in python",
        "  - health warning: display rate +20.0% in lora",
        "  health:",
        "    fail srm_language (python): sample ratio mismatch in python",
        "    warn shown_rate (lora): display rate +20.0% in lora",
        "    pass srm: split as weighted",
    ]
