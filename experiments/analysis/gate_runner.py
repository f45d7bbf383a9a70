"""Running gates against the registry: evaluate, store the decision, and apply it if asked.

Applying goes through the registry, so every coverage or status change it makes is audited like
a person's, with the gate's reasons: advance ramps to the next stage; roll back ramps to 0 and
pauses (everyone back on the default variant at the next refresh); halt pauses.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from experiments.analysis.gate_models import GateDecisionRow
from experiments.analysis.gates import Decision, GateDecision, GateInput, evaluate
from experiments.definitions.models import Experiment, ExperimentAudit
from experiments.definitions.registry import (
    config_of,
    get_experiment,
    list_experiments,
    ramp,
    set_status,
)
from experiments.definitions.status import Status

log = logging.getLogger(__name__)

# Turns an experiment into the gate's view of its analysis, plus the evidence to store.
Analyzer = Callable[[Session, Experiment], tuple[GateInput, dict[str, object]]]


def stage_started_at(session: Session, experiment: Experiment) -> dt.datetime:
    """When the experiment reached its current coverage (from the audit log)."""
    rows = session.scalars(
        select(ExperimentAudit)
        .where(ExperimentAudit.experiment_key == experiment.key)
        .order_by(ExperimentAudit.id.desc())
    )
    for row in rows:
        after = (row.after or {}).get("coverage")
        before = (row.before or {}).get("coverage")
        if after == experiment.coverage and before != after:
            return row.at
    return experiment.started_at or experiment.created_at


def run_gate(
    session: Session,
    *,
    key: str,
    analyze: Analyzer,
    apply: bool,
    actor: str,
    now: dt.datetime | None = None,
) -> GateDecision:
    """Evaluate one experiment's gate, store the decision with its health checks and, with
    ``apply``, carry it out."""
    now = now or dt.datetime.now(dt.UTC)
    experiment = get_experiment(session, key)
    gate_input, evidence = analyze(session, experiment)
    decision = evaluate(
        config=config_of(experiment),
        coverage=experiment.coverage,
        stage_started_at=stage_started_at(session, experiment),
        now=now,
        data=gate_input,
    )
    applied = apply and decision.decision is not Decision.HOLD
    if applied:
        _apply(session, key=key, decision=decision, actor=actor)
    session.add(
        GateDecisionRow(
            experiment_key=key,
            decision=decision.decision.value,
            reasons=list(decision.reasons),
            coverage=decision.coverage,
            next_coverage=decision.next_coverage,
            stage=decision.stage,
            evidence=evidence,
            health=[check.to_dict() for check in decision.health],
            applied=applied,
            actor=actor,
        )
    )
    session.flush()
    return decision


def run_all_gates(
    session: Session, *, analyze: Analyzer, apply: bool, actor: str
) -> dict[str, GateDecision]:
    """Evaluate every running experiment (the scheduler's unit of work)."""
    decisions: dict[str, GateDecision] = {}
    for experiment in list_experiments(session, status=Status.RUNNING):
        decisions[experiment.key] = run_gate(
            session, key=experiment.key, analyze=analyze, apply=apply, actor=actor
        )
    return decisions


def gate_history(session: Session, *, key: str, limit: int = 50) -> list[GateDecisionRow]:
    """The newest stored decisions for an experiment, newest first."""
    return list(
        session.scalars(
            select(GateDecisionRow)
            .where(GateDecisionRow.experiment_key == key)
            .order_by(GateDecisionRow.id.desc())
            .limit(limit)
        )
    )


def _apply(session: Session, *, key: str, decision: GateDecision, actor: str) -> None:
    reason = f"gate: {decision.decision.value}: " + "; ".join(decision.reasons)
    if decision.decision is Decision.ADVANCE and decision.next_coverage is not None:
        ramp(session, key=key, coverage=decision.next_coverage, actor=actor, reason=reason)
    elif decision.decision is Decision.ROLLBACK:
        ramp(session, key=key, coverage=0.0, actor=actor, reason=reason)
        set_status(session, key=key, status=Status.PAUSED, actor=actor, reason=reason)
    elif decision.decision is Decision.HALT:
        set_status(session, key=key, status=Status.PAUSED, actor=actor, reason=reason)
    log.info("gate %s for %s applied: %s", decision.decision.value, key, reason)
