"""From events in PostgreSQL to the analysis and the gate's decision, end to end.

Synthetic events with a known effect (treatment acceptance × 1.3) are loaded by COPY inside a
transaction that is rolled back after each test, next to an experiment in the registry.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import pytest
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from experiments.analysis.analyze import (
    AnalysisReport,
    analyze_experiment,
    gate_analyzer,
    gate_view,
)
from experiments.analysis.gate_models import GateDecisionRow
from experiments.analysis.gate_runner import run_gate
from experiments.analysis.gates import Decision
from experiments.analysis.report_table import render
from experiments.analysis.rollups import refresh_rollups
from experiments.definitions.config import ExperimentConfig
from experiments.definitions.registry import apply_definition, audit_log, get_experiment
from experiments.definitions.status import Status
from simulator.synthetic import SyntheticConfig, load_synthetic
from tests.experiment_definitions import config

EXPERIMENT = "synthetic"


def definition(**fields: Any) -> ExperimentConfig:
    base: dict[str, Any] = {
        "status": "running",
        "targeting": {},
        "arms": [{"name": "control", "weight": 0.5}, {"name": "treatment", "weight": 0.5}],
        "primary_metrics": ["acceptance_rate"],
        "guardrails": [{"metric": "latency_p95", "margin": 0.2}],
        "coverage": 0.05,
        "rollout": {
            "stages": [
                {"coverage": 0.05, "min_users": 10, "min_duration_s": 0},
                {"coverage": 0.5, "min_users": 10},
                {"coverage": 1.0},
            ]
        },
    }
    return config(EXPERIMENT, **(base | fields))


@pytest.fixture
def session(conn: Connection) -> Session:
    return Session(bind=conn, join_transaction_mode="create_savepoint")


def load(conn: Connection, **options: Any) -> None:
    driver = conn.connection.driver_connection
    assert driver is not None
    synthetic = SyntheticConfig(
        experiment=EXPERIMENT, users=1200, events=60_000, days=5.0, acceptance_effect=0.3
    )
    load_synthetic(driver, dataclasses.replace(synthetic, **options))
    refresh_rollups(conn)


def report_for(session: Session, **options: Any) -> AnalysisReport:
    experiment = get_experiment(session, EXPERIMENT)
    return analyze_experiment(
        session.connection(),
        definition(),
        status=experiment.status,
        coverage=experiment.coverage,
        **options,
    )


def result(report: AnalysisReport, metric: str, language: str | None = None) -> Any:
    [found] = [
        r
        for r in report.results
        if (r.metric, r.arm, r.language) == (metric, "treatment", language)
    ]
    return found


def test_a_real_effect_is_found_and_reported(session: Session) -> None:
    apply_definition(session, config=definition(), actor="test")
    load(session.connection())
    report = report_for(session, cuped=True)
    acceptance = result(report, "acceptance_rate")
    assert acceptance.comparison.code.value == "ok"
    # The truth is +30% on the acceptance probability; the CI must say "up" and contain it.
    assert acceptance.comparison.ci_rel[0] > 0
    assert acceptance.comparison.ci_rel[0] < 0.3 < acceptance.comparison.ci_rel[1] + 0.05
    assert acceptance.adjusted is not None and acceptance.adjusted.significant
    assert report.srm_p_value is not None and report.srm_p_value > 0.001
    assert sum(report.users_per_arm.values()) > 0
    assert report.first_exposure is not None and report.last_event is not None
    assert report.first_exposure < report.last_event
    # Nothing else was changed between arms: latency shows no significant lift.
    assert not result(report, "latency_mean_per_completion").adjusted.significant
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["correction"] == "holm"
    assert {r["metric"] for r in as_json["results"]} >= {"acceptance_rate", "cpr_120", "error_rate"}
    table = render(report)
    assert "acceptance_rate" in table and "*" in table and "SRM" in table


def test_the_language_drill_down_has_its_own_corrected_family(session: Session) -> None:
    apply_definition(session, config=definition(), actor="test")
    load(session.connection())
    report = report_for(session, by_language=True)
    languages = {r.language for r in report.results if r.language is not None}
    assert len(languages) >= 4
    per_language = [r for r in report.results if r.language is not None]
    assert all(r.adjusted is not None for r in per_language)
    # Adjusted p-values are never below the raw ones.
    for r in per_language:
        if r.adjusted and r.adjusted.p_adjusted is not None and r.comparison.p_rel is not None:
            assert r.adjusted.p_adjusted >= r.comparison.p_rel - 1e-12


def test_raw_and_rollup_sources_agree(session: Session) -> None:
    apply_definition(session, config=definition(), actor="test")
    load(session.connection())
    raw = report_for(session, source="raw")
    rollups = report_for(session, source="rollups")
    for a, b in zip(raw.results, rollups.results, strict=True):
        assert a.comparison.lift_rel == pytest.approx(b.comparison.lift_rel, rel=1e-9, abs=1e-12)


def test_the_gate_advances_a_healthy_experiment_and_records_why(session: Session) -> None:
    apply_definition(session, config=definition(), actor="test")
    load(session.connection())
    decision = run_gate(
        session, key=EXPERIMENT, analyze=gate_analyzer, apply=True, actor="gate:test"
    )
    assert decision.decision is Decision.ADVANCE, decision.reasons
    assert decision.next_coverage == 0.5
    assert get_experiment(session, EXPERIMENT).coverage == 0.5
    [entry, *_] = audit_log(session, key=EXPERIMENT)
    assert entry.action == "ramp" and entry.actor == "gate:test"
    assert entry.reason is not None and entry.reason.startswith("gate: advance")
    [row] = session.scalars(select(GateDecisionRow)).all()
    assert (row.decision, row.applied, row.next_coverage) == ("advance", True, 0.5)
    assert row.evidence["users_per_arm"] == decision_users(session)


def decision_users(session: Session) -> dict[str, int]:
    report = report_for(session)
    return report.users_per_arm


def test_the_gate_rolls_back_when_the_primary_metric_is_worse(session: Session) -> None:
    apply_definition(session, config=definition(), actor="test")
    load(session.connection(), acceptance_effect=-0.6)
    view = gate_view(report_for(session, cuped=True), definition())
    assert any(v.significantly_worse for v in view.primary)
    decision = run_gate(
        session, key=EXPERIMENT, analyze=gate_analyzer, apply=True, actor="gate:test"
    )
    assert decision.decision is Decision.ROLLBACK
    assert "acceptance_rate is significantly worse in treatment" in decision.reasons[0]
    experiment = get_experiment(session, EXPERIMENT)
    assert (experiment.status, experiment.coverage) == (Status.PAUSED.value, 0.0)


def test_the_gate_only_records_without_apply(session: Session) -> None:
    apply_definition(session, config=definition(), actor="test")
    load(session.connection())
    before = get_experiment(session, EXPERIMENT).coverage
    run_gate(
        session,
        key=EXPERIMENT,
        analyze=gate_analyzer,
        apply=False,
        actor="gate:test",
        now=dt.datetime.now(dt.UTC),
    )
    assert get_experiment(session, EXPERIMENT).coverage == before
    [row] = session.scalars(select(GateDecisionRow)).all()
    assert row.applied is False
