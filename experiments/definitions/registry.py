"""The experiment registry: define, start, pause, ramp and stop experiments, with an audit log.

Every change runs in the caller's transaction, writes an audit row (state before and after) and
bumps the registry version, which running assignment services poll to reload within seconds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, object_session

from experiments.definitions.config import ConfigError, ExperimentConfig, parse_config
from experiments.definitions.models import (
    Experiment,
    ExperimentArm,
    ExperimentAudit,
    RegistryVersion,
)
from experiments.definitions.status import Status

# Channel a NOTIFY goes out on after each change (for listeners that want it immediately).
CHANNEL = "codelift_registry"

LIVE = (Status.RUNNING, Status.PAUSED)
_TRANSITIONS: dict[Status, tuple[Status, ...]] = {
    Status.DRAFT: (Status.RUNNING, Status.STOPPED),
    Status.RUNNING: (Status.PAUSED, Status.STOPPED, Status.SHIPPED),
    Status.PAUSED: (Status.RUNNING, Status.STOPPED, Status.SHIPPED),
    Status.STOPPED: (),
    Status.SHIPPED: (),
}
# Changing these while an experiment is live would move users between arms or out of it.
_FROZEN_WHILE_LIVE = ("seed", "bucketing_version", "layer", "traffic", "arms")


class RegistryError(ValueError):
    """A change the registry refuses; the message says why and what to do instead."""


class UnknownExperimentError(LookupError):
    """No experiment has the given key."""


@dataclasses.dataclass(frozen=True)
class ApplyResult:
    """What ``apply_definition`` did."""

    experiment: Experiment
    created: bool
    changed: tuple[str, ...]


def config_of(experiment: Experiment) -> ExperimentConfig:
    """The stored experiment as a validated definition."""
    return parse_config(
        {
            "key": experiment.key,
            "description": experiment.description,
            "seed": experiment.seed,
            "bucketing_version": experiment.bucketing_version,
            "layer": experiment.layer,
            "traffic": (experiment.traffic_low, experiment.traffic_high),
            "status": experiment.status,
            "coverage": experiment.coverage,
            "targeting": experiment.targeting,
            "arms": [
                {
                    "name": arm.name,
                    "weight": arm.weight,
                    "description": arm.description,
                    "variant": arm.variant,
                }
                for arm in experiment.arms
            ],
            "primary_metrics": experiment.primary_metrics,
            "guardrails": experiment.guardrails,
            "rollout": experiment.rollout,
            **(experiment.analysis or {}),
        }
    )


def _snapshot(experiment: Experiment) -> dict[str, Any]:
    return config_of(experiment).model_dump(mode="json")


def get_experiment(session: Session, key: str) -> Experiment:
    """The experiment with ``key``."""
    experiment = session.scalar(select(Experiment).where(Experiment.key == key))
    if experiment is None:
        raise UnknownExperimentError(f"no experiment with key {key!r}")
    return experiment


def list_experiments(session: Session, *, status: Status | None = None) -> Sequence[Experiment]:
    """Experiments by key, optionally only those with ``status``."""
    query = select(Experiment).order_by(Experiment.key)
    if status is not None:
        query = query.where(Experiment.status == status.value)
    return session.scalars(query).all()


def audit_log(session: Session, *, key: str, limit: int = 100) -> Sequence[ExperimentAudit]:
    """The newest changes to an experiment, newest first."""
    return session.scalars(
        select(ExperimentAudit)
        .where(ExperimentAudit.experiment_key == key)
        .order_by(ExperimentAudit.id.desc())
        .limit(limit)
    ).all()


def apply_definition(session: Session, *, config: ExperimentConfig, actor: str) -> ApplyResult:
    """Create an experiment from ``config``, or update it to match."""
    existing = session.scalar(
        select(Experiment).where(Experiment.key == config.key).with_for_update()
    )
    if existing is None:
        if config.status not in (Status.DRAFT, Status.RUNNING):
            raise RegistryError(
                f"status: a new experiment starts as draft or running, not {config.status}"
            )
        if config.status is Status.RUNNING:
            _check_layer_conflicts(session, config)
        experiment = Experiment(
            key=config.key, status=config.status.value, seed=config.effective_seed
        )
        _write_fields(experiment, config)
        experiment.coverage = config.initial_coverage
        if config.status is Status.RUNNING:
            experiment.started_at = _now()
        session.add(experiment)
        session.flush()
        _record(
            session, key=config.key, action="create", actor=actor, before=None, after=experiment
        )
        return ApplyResult(experiment=experiment, created=True, changed=())

    if "status" not in config.model_fields_set:
        # A file without a status leaves the experiment's status alone (as for coverage).
        config = config.model_copy(update={"status": Status(existing.status)})
    before = config_of(existing)
    changed = _changed_fields(before, config)
    if not changed:
        return ApplyResult(experiment=existing, created=False, changed=())
    live = Status(existing.status) in LIVE
    frozen = [name for name in _FROZEN_WHILE_LIVE if name in changed]
    if live and frozen:
        raise RegistryError(
            f"{', '.join(frozen)}: cannot change while {config.key!r} is {existing.status}; "
            "that would move users between arms. Stop it and define a new experiment instead"
        )
    if "status" in changed:
        _check_transition(config.key, Status(existing.status), config.status)
    # A paused experiment is live too: widening its targeting must not overlap a running one.
    if config.status in LIVE:
        _check_layer_conflicts(session, config)
    before_state = _snapshot(existing)
    _write_fields(existing, config)
    if "coverage" in changed and config.coverage is not None:
        existing.coverage = config.coverage
    if "status" in changed:
        _stamp_status(existing, config.status)
    existing.updated_at = _now()
    session.flush()
    _record(
        session, key=config.key, action="update", actor=actor, before=before_state, after=existing
    )
    return ApplyResult(experiment=existing, created=False, changed=tuple(changed))


def set_status(
    session: Session, *, key: str, status: Status, actor: str, reason: str | None = None
) -> Experiment:
    """Start, pause, resume, stop or ship an experiment."""
    experiment = _locked(session, key)
    current = Status(experiment.status)
    if current is status:
        return experiment
    _check_transition(key, current, status)
    if status is Status.RUNNING:
        _check_layer_conflicts(session, config_of(experiment))
    before = _snapshot(experiment)
    _stamp_status(experiment, status)
    experiment.updated_at = _now()
    session.flush()
    _record(
        session,
        key=key,
        action=status.value,
        actor=actor,
        before=before,
        after=experiment,
        reason=reason,
    )
    return experiment


def ramp(
    session: Session, *, key: str, coverage: float, actor: str, reason: str | None = None
) -> Experiment:
    """Set the share of targeted traffic in the experiment (0 to 1); users keep their arms."""
    if not 0.0 <= coverage <= 1.0:
        raise RegistryError(f"coverage must be between 0 and 1, got {coverage}")
    experiment = _locked(session, key)
    if Status(experiment.status) in (Status.STOPPED, Status.SHIPPED):
        raise RegistryError(
            f"{key!r} is {experiment.status}; only a live or draft experiment ramps"
        )
    if experiment.coverage == coverage:
        return experiment
    before = _snapshot(experiment)
    experiment.coverage = coverage
    experiment.updated_at = _now()
    session.flush()
    _record(
        session, key=key, action="ramp", actor=actor, before=before, after=experiment, reason=reason
    )
    return experiment


def registry_version(session: Session) -> int:
    """The registry's change counter."""
    version = session.scalar(select(RegistryVersion.version).where(RegistryVersion.id == 1))
    return int(version or 0)


def _locked(session: Session, key: str) -> Experiment:
    experiment = session.scalar(select(Experiment).where(Experiment.key == key).with_for_update())
    if experiment is None:
        raise UnknownExperimentError(f"no experiment with key {key!r}")
    return experiment


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _check_transition(key: str, current: Status, target: Status) -> None:
    if target not in _TRANSITIONS[current]:
        allowed = ", ".join(_TRANSITIONS[current]) or "nothing (it is final)"
        raise RegistryError(f"status: {key!r} is {current}; it can go to {allowed}, not {target}")


def _stamp_status(experiment: Experiment, status: Status) -> None:
    experiment.status = status.value
    if status is Status.RUNNING and experiment.started_at is None:
        experiment.started_at = _now()
    if status in (Status.STOPPED, Status.SHIPPED):
        experiment.ended_at = _now()


def _changed_fields(before: ExperimentConfig, after: ExperimentConfig) -> list[str]:
    old, new = before.model_dump(mode="json"), after.model_dump(mode="json")
    # An unset coverage in a file means "leave the current coverage alone".
    if after.coverage is None:
        new["coverage"] = old["coverage"]
    if after.seed is None:
        new["seed"] = old["seed"]
    return [name for name in new if new[name] != old[name]]


def _write_fields(experiment: Experiment, config: ExperimentConfig) -> None:
    experiment.description = config.description
    if config.seed is not None:
        experiment.seed = config.seed
    experiment.bucketing_version = config.bucketing_version
    experiment.layer = config.layer
    experiment.traffic_low, experiment.traffic_high = config.traffic
    experiment.targeting = config.targeting.model_dump(mode="json")
    experiment.primary_metrics = list(config.primary_metrics)
    experiment.guardrails = [g.model_dump(mode="json") for g in config.guardrails]
    experiment.rollout = config.rollout.model_dump(mode="json")
    experiment.analysis = {
        "capping": {
            metric: cap.model_dump(mode="json", exclude_none=True) if cap else None
            for metric, cap in config.capping.items()
        },
        "plan": config.plan.model_dump(mode="json", exclude_none=True),
    }
    wanted = [(arm.name, arm) for arm in config.arms]
    if [(a.name, a.weight, a.description, a.variant) for a in experiment.arms] != [
        (arm.name, arm.weight, arm.description, arm.variant.as_dict()) for _, arm in wanted
    ]:
        session = object_session(experiment)
        if experiment.arms and session is not None:
            # The unit of work inserts before it deletes, so new arms reusing old names would
            # break the (experiment_id, name) unique constraint: delete the old ones first.
            experiment.arms.clear()
            session.flush()
        experiment.arms = [
            ExperimentArm(
                position=position,
                name=arm.name,
                weight=arm.weight,
                description=arm.description,
                variant=arm.variant.as_dict(),
            )
            for position, (_, arm) in enumerate(wanted)
        ]


def _check_layer_conflicts(session: Session, config: ExperimentConfig) -> None:
    """Refuse a second live experiment in the layer that claims the same traffic."""
    others = session.scalars(
        select(Experiment).where(
            Experiment.layer == config.layer,
            Experiment.key != config.key,
            Experiment.status.in_([s.value for s in LIVE]),
        )
    ).all()
    low, high = config.traffic
    for other in others:
        overlap = low < other.traffic_high and other.traffic_low < high
        if overlap and not config.targeting.disjoint_from(config_of(other).targeting):
            raise ConfigError(
                f"layer {config.layer!r}: {other.key!r} is {other.status} there with traffic "
                f"[{other.traffic_low:g}, {other.traffic_high:g}), which overlaps "
                f"[{low:g}, {high:g}) for the same requests; give the experiments disjoint "
                "traffic slices or targeting, or put one in another layer"
            )


def _record(
    session: Session,
    *,
    key: str,
    action: str,
    actor: str,
    before: dict[str, Any] | None,
    after: Experiment | None,
    reason: str | None = None,
) -> None:
    session.add(
        ExperimentAudit(
            experiment_key=key,
            action=action,
            actor=actor,
            reason=reason,
            before=before,
            after=_snapshot(after) if after is not None else None,
        )
    )
    version = session.execute(
        update(RegistryVersion)
        .where(RegistryVersion.id == 1)
        .values(version=RegistryVersion.version + 1, changed_at=_now())
        .returning(RegistryVersion.version)
    ).scalar_one()
    # Delivered at commit, and only if the transaction commits.
    session.execute(
        text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": str(version)}
    )
