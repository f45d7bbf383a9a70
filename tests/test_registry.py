"""The experiment registry on real PostgreSQL: definitions, status, ramps, layers and the audit log.

Each test runs in a transaction rolled back afterwards (``db_session``).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from experiments.definitions.capping import DEFAULT_CAPPING, Capping
from experiments.definitions.config import ConfigError, ExperimentConfig
from experiments.definitions.models import Experiment, ExperimentArm, ExperimentAudit
from experiments.definitions.registry import (
    RegistryError,
    UnknownExperimentError,
    apply_definition,
    audit_log,
    config_of,
    get_experiment,
    list_experiments,
    ramp,
    registry_version,
    set_status,
)
from experiments.definitions.status import Status
from tests.experiment_definitions import arms, config

ACTOR = "test:alice"


def apply(session: Session, cfg: ExperimentConfig, actor: str = ACTOR) -> Experiment:
    return apply_definition(session, config=cfg, actor=actor).experiment


def audit_rows(session: Session, key: str) -> list[ExperimentAudit]:
    """Every audit row of ``key``, oldest first."""
    return list(reversed(audit_log(session, key=key, limit=1000)))


def running(key: str, **fields: Any) -> ExperimentConfig:
    return config(key, status="running", **fields)


# --- create ---------------------------------------------------------------------------------


def test_create_a_draft(db_session: Session) -> None:
    version = registry_version(db_session)
    result = apply_definition(db_session, config=config("draft-exp"), actor=ACTOR)
    assert result.created
    assert result.changed == ()
    experiment = result.experiment
    assert experiment.status == "draft"
    assert experiment.seed == "draft-exp"  # the key, by default
    assert experiment.coverage == 0.01  # the first stage's
    assert experiment.started_at is None
    assert experiment.ended_at is None
    assert (experiment.traffic_low, experiment.traffic_high) == (0.0, 1.0)
    assert [(a.position, a.name, a.weight) for a in experiment.arms] == [
        (0, "control", 0.5),
        (1, "lora", 0.5),
    ]
    assert experiment.arms[1].variant == {"adapter": "python-lora"}
    assert experiment.targeting["languages"]["include"] == ["python"]
    assert experiment.rollout["stages"][0]["min_duration_s"] == 3600.0
    assert registry_version(db_session) == version + 1

    [entry] = audit_rows(db_session, "draft-exp")
    assert (entry.action, entry.actor, entry.reason, entry.before) == ("create", ACTOR, None, None)
    assert entry.after == config_of(experiment).model_dump(mode="json")


def test_create_running(db_session: Session) -> None:
    experiment = apply(db_session, running("running-exp", seed="fixed-seed", coverage=0.05))
    assert experiment.status == "running"
    assert experiment.started_at is not None
    assert experiment.started_at.tzinfo is not None
    assert experiment.seed == "fixed-seed"
    assert experiment.coverage == 0.05


@pytest.mark.parametrize("status", ["paused", "stopped", "shipped"])
def test_a_new_experiment_starts_as_draft_or_running(db_session: Session, status: str) -> None:
    with pytest.raises(
        RegistryError, match=f"a new experiment starts as draft or running, not {status}"
    ):
        apply(db_session, config("new-exp", status=status))
    assert db_session.scalar(select(Experiment).where(Experiment.key == "new-exp")) is None


def test_reapplying_an_unchanged_definition_is_a_no_op(db_session: Session) -> None:
    apply(db_session, running("same-exp"))
    version = registry_version(db_session)
    result = apply_definition(db_session, config=running("same-exp"), actor="someone-else")
    assert (result.created, result.changed) == (False, ())
    assert registry_version(db_session) == version
    assert [e.action for e in audit_rows(db_session, "same-exp")] == ["create"]


def test_an_unset_coverage_keeps_a_ramp(db_session: Session) -> None:
    apply(db_session, running("ramped-exp"))
    ramp(db_session, key="ramped-exp", coverage=0.25, actor=ACTOR)
    result = apply_definition(db_session, config=running("ramped-exp"), actor=ACTOR)
    assert result.changed == ()
    assert result.experiment.coverage == 0.25


def test_an_unset_seed_keeps_the_stored_seed(db_session: Session) -> None:
    apply(db_session, config("seeded-exp", seed="original"))
    result = apply_definition(db_session, config=config("seeded-exp"), actor=ACTOR)
    assert result.changed == ()
    assert result.experiment.seed == "original"


# --- updates --------------------------------------------------------------------------------


def test_an_update_is_audited_with_before_and_after(db_session: Session) -> None:
    apply(db_session, running("upd-exp"))
    version = registry_version(db_session)
    result = apply_definition(
        db_session,
        config=running(
            "upd-exp",
            description="now with pct_code_written",
            primary_metrics=["acceptance_rate", "pct_code_written"],
        ),
        actor="test:bob",
    )
    assert result.changed == ("description", "primary_metrics")
    assert result.experiment.primary_metrics == ["acceptance_rate", "pct_code_written"]
    assert registry_version(db_session) == version + 1
    create, update = audit_rows(db_session, "upd-exp")
    assert (update.action, update.actor) == ("update", "test:bob")
    assert update.before is not None and update.after is not None
    assert update.before["description"] == "Python LoRA adapter vs. the base model"
    assert update.after["description"] == "now with pct_code_written"
    assert update.before["primary_metrics"] == ["acceptance_rate", "cpr_120"]
    assert update.after["primary_metrics"] == ["acceptance_rate", "pct_code_written"]
    assert update.before == create.after
    # Nothing else moved.
    assert {k for k in update.after if update.after[k] != update.before[k]} == {
        "description",
        "primary_metrics",
    }


def test_guardrails_targeting_and_rollout_change_while_running(db_session: Session) -> None:
    apply(db_session, running("live-edit"))
    result = apply_definition(
        db_session,
        config=running(
            "live-edit",
            guardrails=[{"metric": "latency_p95", "margin": 0.05}],
            targeting={"languages": {"include": ["python", "go"]}},
            rollout={"stages": [{"coverage": 0.1}, {"coverage": 1.0}]},
        ),
        actor=ACTOR,
    )
    assert result.changed == ("targeting", "guardrails", "rollout")
    assert result.experiment.guardrails == [{"metric": "latency_p95", "margin": 0.05}]
    assert result.experiment.coverage == 0.01  # a new plan does not ramp by itself


FROZEN_CHANGES: list[tuple[str, dict[str, Any]]] = [
    ("arms", {"arms": arms(0.4, 0.6)}),
    ("arms", {"arms": arms(0.5, 0.25, 0.25)}),
    (
        "arms",
        {
            "arms": [
                {"name": "control", "weight": 0.5, "description": "base model"},
                {"name": "lora", "weight": 0.5, "variant": {"adapter": "other-lora"}},
            ]
        },
    ),
    ("seed", {"seed": "another-seed"}),
    ("layer", {"layer": "decoding"}),
    ("traffic", {"traffic": [0.0, 0.5]}),
]


@pytest.mark.parametrize("live", ["running", "paused"])
@pytest.mark.parametrize(("field", "change"), FROZEN_CHANGES)
def test_frozen_fields_cannot_change_while_live(
    db_session: Session, live: str, field: str, change: dict[str, Any]
) -> None:
    apply(db_session, running("frozen-exp"))
    if live == "paused":
        set_status(db_session, key="frozen-exp", status=Status.PAUSED, actor=ACTOR)
    version = registry_version(db_session)
    with pytest.raises(RegistryError) as caught:
        apply(db_session, config("frozen-exp", status=live, **change))
    assert str(caught.value) == (
        f"{field}: cannot change while 'frozen-exp' is {live}; that would move users between "
        "arms. Stop it and define a new experiment instead"
    )
    assert registry_version(db_session) == version
    stored = config_of(get_experiment(db_session, "frozen-exp"))
    assert stored.arms == running("frozen-exp").arms
    assert stored.seed == "frozen-exp"


def test_several_frozen_fields_are_named_together(db_session: Session) -> None:
    apply(db_session, running("frozen-many"))
    with pytest.raises(RegistryError, match=r"^seed, layer, arms: cannot change while"):
        apply(
            db_session,
            running("frozen-many", seed="s2", layer="other", arms=arms(0.3, 0.7)),
        )


@pytest.mark.parametrize(("field", "change"), FROZEN_CHANGES)
def test_frozen_fields_change_freely_in_a_draft(
    db_session: Session, field: str, change: dict[str, Any]
) -> None:
    apply(db_session, config("draft-edit"))
    result = apply_definition(db_session, config=config("draft-edit", **change), actor=ACTOR)
    assert result.changed == (field,)
    stored = {"seed": "draft-edit", "coverage": 0.01, **change}
    assert config_of(result.experiment) == config("draft-edit", **stored)


def test_draft_arms_can_be_renamed_reordered_and_reweighted(db_session: Session) -> None:
    # The same names in new rows: the old rows must go before the new ones go in.
    apply(db_session, config("arms-edit"))
    swapped = [{"name": "lora", "weight": 0.3}, {"name": "control", "weight": 0.7}]
    experiment = apply(db_session, config("arms-edit", arms=swapped))
    db_session.expire_all()
    rows = db_session.scalars(
        select(ExperimentArm)
        .where(ExperimentArm.experiment_id == experiment.id)
        .order_by(ExperimentArm.position)
    ).all()
    assert [(a.position, a.name, a.weight) for a in rows] == [(0, "lora", 0.3), (1, "control", 0.7)]


def test_a_draft_starts_by_applying_a_running_definition(db_session: Session) -> None:
    apply(db_session, config("start-by-file"))
    result = apply_definition(db_session, config=running("start-by-file"), actor=ACTOR)
    assert result.changed == ("status",)
    assert result.experiment.status == "running"
    assert result.experiment.started_at is not None
    entry = audit_rows(db_session, "start-by-file")[-1]
    assert (entry.action, (entry.before or {})["status"]) == ("update", "draft")
    assert entry.after == config_of(result.experiment).model_dump(mode="json")


def test_applying_a_status_follows_the_transitions(db_session: Session) -> None:
    apply(db_session, running("file-status"))
    with pytest.raises(RegistryError) as caught:
        apply(db_session, config("file-status", status="draft"))
    assert str(caught.value) == (
        "status: 'file-status' is running; it can go to paused, stopped, shipped, not draft"
    )


# --- status ---------------------------------------------------------------------------------

ALLOWED = [
    ([], Status.RUNNING),
    ([], Status.STOPPED),
    ([Status.RUNNING], Status.PAUSED),
    ([Status.RUNNING], Status.STOPPED),
    ([Status.RUNNING], Status.SHIPPED),
    ([Status.RUNNING, Status.PAUSED], Status.RUNNING),
    ([Status.RUNNING, Status.PAUSED], Status.STOPPED),
    ([Status.RUNNING, Status.PAUSED], Status.SHIPPED),
]


@pytest.mark.parametrize(("path", "target"), ALLOWED)
def test_allowed_status_transitions(
    db_session: Session, path: list[Status], target: Status
) -> None:
    apply(db_session, config("st-exp"))
    for status in path:
        set_status(db_session, key="st-exp", status=status, actor=ACTOR)
    version = registry_version(db_session)
    experiment = set_status(
        db_session, key="st-exp", status=target, actor="test:carol", reason="because"
    )
    assert experiment.status == target.value
    assert registry_version(db_session) == version + 1
    entry = audit_rows(db_session, "st-exp")[-1]
    assert (entry.action, entry.actor, entry.reason) == (target.value, "test:carol", "because")
    assert entry.before is not None and entry.after is not None
    assert (entry.before["status"], entry.after["status"]) == (
        (path or [Status.DRAFT])[-1].value,
        target.value,
    )
    assert (experiment.ended_at is not None) is (target in (Status.STOPPED, Status.SHIPPED))
    assert (experiment.started_at is not None) is (Status.RUNNING in (*path, target))


REFUSED = [
    ([], Status.PAUSED, "'st-exp' is draft; it can go to running, stopped, not paused"),
    ([], Status.SHIPPED, "'st-exp' is draft; it can go to running, stopped, not shipped"),
    (
        [Status.RUNNING, Status.PAUSED],
        Status.DRAFT,
        "'st-exp' is paused; it can go to running, stopped, shipped, not draft",
    ),
    ([Status.STOPPED], Status.RUNNING, "'st-exp' is stopped; it can go to nothing (it is final)"),
    (
        [Status.RUNNING, Status.SHIPPED],
        Status.STOPPED,
        "'st-exp' is shipped; it can go to nothing (it is final), not stopped",
    ),
]


@pytest.mark.parametrize(("path", "target", "message"), REFUSED)
def test_refused_status_transitions(
    db_session: Session, path: list[Status], target: Status, message: str
) -> None:
    apply(db_session, config("st-exp"))
    for status in path:
        set_status(db_session, key="st-exp", status=status, actor=ACTOR)
    version = registry_version(db_session)
    with pytest.raises(RegistryError, match=f"^{re.escape(f'status: {message}')}"):
        set_status(db_session, key="st-exp", status=target, actor=ACTOR)
    assert registry_version(db_session) == version
    assert get_experiment(db_session, "st-exp").status == (path or [Status.DRAFT])[-1].value


def test_setting_the_same_status_is_a_no_op(db_session: Session) -> None:
    apply(db_session, running("same-status"))
    version = registry_version(db_session)
    set_status(db_session, key="same-status", status=Status.RUNNING, actor=ACTOR)
    assert registry_version(db_session) == version
    assert len(audit_rows(db_session, "same-status")) == 1


def test_resuming_keeps_the_first_start_time(db_session: Session) -> None:
    experiment = apply(db_session, running("resume-exp"))
    started = experiment.started_at
    set_status(db_session, key="resume-exp", status=Status.PAUSED, actor=ACTOR)
    set_status(db_session, key="resume-exp", status=Status.RUNNING, actor=ACTOR)
    assert experiment.started_at == started


# --- ramps ----------------------------------------------------------------------------------


def test_a_ramp_is_audited_and_bumps_the_version(db_session: Session) -> None:
    apply(db_session, running("ramp-exp"))
    version = registry_version(db_session)
    experiment = ramp(
        db_session, key="ramp-exp", coverage=0.25, actor="test:dave", reason="stage 2 met"
    )
    assert experiment.coverage == 0.25
    assert registry_version(db_session) == version + 1
    entry = audit_rows(db_session, "ramp-exp")[-1]
    assert (entry.action, entry.actor, entry.reason) == ("ramp", "test:dave", "stage 2 met")
    assert entry.before is not None and entry.after is not None
    assert (entry.before["coverage"], entry.after["coverage"]) == (0.01, 0.25)


def test_the_planned_ramp_is_one_audit_row_per_step(db_session: Session) -> None:
    apply(db_session, running("ramp-plan"))
    version = registry_version(db_session)
    for coverage in (0.05, 0.25, 0.5, 1.0):
        ramp(db_session, key="ramp-plan", coverage=coverage, actor=ACTOR)
    assert registry_version(db_session) == version + 4
    ramps = [e for e in audit_rows(db_session, "ramp-plan") if e.action == "ramp"]
    assert [(e.before or {})["coverage"] for e in ramps] == [0.01, 0.05, 0.25, 0.5]
    assert [(e.after or {})["coverage"] for e in ramps] == [0.05, 0.25, 0.5, 1.0]


def test_ramping_to_the_same_coverage_is_a_no_op(db_session: Session) -> None:
    apply(db_session, running("ramp-same", coverage=0.5))
    version = registry_version(db_session)
    ramp(db_session, key="ramp-same", coverage=0.5, actor=ACTOR)
    assert registry_version(db_session) == version


@pytest.mark.parametrize("coverage", [-0.1, 1.1, float("nan")])
def test_a_ramp_outside_0_1_is_refused(db_session: Session, coverage: float) -> None:
    apply(db_session, running("ramp-bad"))
    with pytest.raises(RegistryError, match="coverage must be between 0 and 1"):
        ramp(db_session, key="ramp-bad", coverage=coverage, actor=ACTOR)


def test_ramping_down_and_to_zero_is_allowed(db_session: Session) -> None:
    apply(db_session, running("ramp-down", coverage=0.5))
    assert ramp(db_session, key="ramp-down", coverage=0.0, actor=ACTOR).coverage == 0.0


@pytest.mark.parametrize("status", [Status.DRAFT, Status.PAUSED])
def test_drafts_and_paused_experiments_ramp(db_session: Session, status: Status) -> None:
    apply(db_session, running("ramp-live") if status is Status.PAUSED else config("ramp-live"))
    if status is Status.PAUSED:
        set_status(db_session, key="ramp-live", status=status, actor=ACTOR)
    assert ramp(db_session, key="ramp-live", coverage=0.3, actor=ACTOR).coverage == 0.3


@pytest.mark.parametrize("final", [Status.STOPPED, Status.SHIPPED])
def test_a_finished_experiment_does_not_ramp(db_session: Session, final: Status) -> None:
    apply(db_session, running("ramp-done"))
    set_status(db_session, key="ramp-done", status=final, actor=ACTOR)
    with pytest.raises(RegistryError) as caught:
        ramp(db_session, key="ramp-done", coverage=0.5, actor=ACTOR)
    assert str(caught.value) == f"'ramp-done' is {final}; only a live or draft experiment ramps"


# --- layers ---------------------------------------------------------------------------------


def test_a_second_running_experiment_claiming_the_same_traffic_is_refused(
    db_session: Session,
) -> None:
    apply(db_session, running("first-exp"))
    with pytest.raises(ConfigError) as caught:
        apply(db_session, running("second-exp"))
    assert str(caught.value) == (
        "layer 'completion-model': 'first-exp' is running there with traffic [0, 1), which "
        "overlaps [0, 1) for the same requests; give the experiments disjoint traffic slices or "
        "targeting, or put one in another layer"
    )
    assert db_session.scalar(select(Experiment).where(Experiment.key == "second-exp")) is None


@pytest.mark.parametrize(
    "second",
    [
        # Overlapping slices.
        {"traffic": [0.4, 1.0]},
        # Overlapping targeting: python is in both.
        {"targeting": {"languages": {"include": ["python", "java"]}}},
        {"targeting": {}},
        {"targeting": {"orgs": {"include": ["acme"]}}},
    ],
)
def test_overlap_in_traffic_and_targeting_conflicts(
    db_session: Session, second: dict[str, Any]
) -> None:
    apply(db_session, running("first-exp", traffic=[0.0, 0.5]))
    with pytest.raises(ConfigError, match="'first-exp' is running there"):
        apply(db_session, running("second-exp", **second))


@pytest.mark.parametrize(
    "second",
    [
        {"traffic": [0.5, 1.0]},  # half-open slices that touch do not overlap
        {"targeting": {"languages": {"include": ["java"]}}},
        {"targeting": {"languages": {"exclude": ["python"]}}},
        {"layer": "decoding"},
    ],
)
def test_disjoint_traffic_or_targeting_or_another_layer_is_fine(
    db_session: Session, second: dict[str, Any]
) -> None:
    apply(db_session, running("first-exp", traffic=[0.0, 0.5]))
    assert apply(db_session, running("second-exp", **second)).status == "running"


def test_a_paused_experiment_still_holds_its_traffic(db_session: Session) -> None:
    apply(db_session, running("first-exp"))
    set_status(db_session, key="first-exp", status=Status.PAUSED, actor=ACTOR)
    with pytest.raises(ConfigError, match="'first-exp' is paused there"):
        apply(db_session, running("second-exp"))


@pytest.mark.parametrize("final", [Status.STOPPED, Status.SHIPPED])
def test_a_finished_experiment_frees_its_traffic(db_session: Session, final: Status) -> None:
    apply(db_session, running("first-exp"))
    set_status(db_session, key="first-exp", status=final, actor=ACTOR)
    assert apply(db_session, running("second-exp")).status == "running"


def test_drafts_do_not_conflict_until_started(db_session: Session) -> None:
    apply(db_session, running("first-exp"))
    apply(db_session, config("second-exp"))  # a draft claims nothing yet
    version = registry_version(db_session)
    with pytest.raises(ConfigError, match="'first-exp' is running there"):
        set_status(db_session, key="second-exp", status=Status.RUNNING, actor=ACTOR)
    with pytest.raises(ConfigError, match="'first-exp' is running there"):
        apply(db_session, running("second-exp"))
    assert get_experiment(db_session, "second-exp").status == "draft"
    assert registry_version(db_session) == version


def test_widening_targeting_into_a_running_experiment_is_refused(db_session: Session) -> None:
    apply(db_session, running("py-exp"))
    apply(db_session, running("java-exp", targeting={"languages": {"include": ["java"]}}))
    widened = {"languages": {"include": ["java", "python"]}}
    with pytest.raises(ConfigError, match="'py-exp' is running there"):
        apply(db_session, running("java-exp", targeting=widened))
    # Paused counts as live: it would block py-exp's traffic all the same.
    set_status(db_session, key="java-exp", status=Status.PAUSED, actor=ACTOR)
    with pytest.raises(ConfigError, match="'py-exp' is running there"):
        apply(db_session, config("java-exp", status="paused", targeting=widened))
    assert get_experiment(db_session, "java-exp").targeting["languages"]["include"] == ["java"]


# --- the registry as a whole ----------------------------------------------------------------


def test_every_change_bumps_the_registry_version(db_session: Session) -> None:
    start = registry_version(db_session)
    apply(db_session, config("ver-exp"))
    apply(db_session, config("ver-exp", description="edited"))
    set_status(db_session, key="ver-exp", status=Status.RUNNING, actor=ACTOR)
    ramp(db_session, key="ver-exp", coverage=0.5, actor=ACTOR)
    set_status(db_session, key="ver-exp", status=Status.PAUSED, actor=ACTOR)
    set_status(db_session, key="ver-exp", status=Status.STOPPED, actor=ACTOR)
    assert registry_version(db_session) == start + 6
    entries = audit_rows(db_session, "ver-exp")
    assert [e.action for e in entries] == [
        "create",
        "update",
        "running",
        "ramp",
        "paused",
        "stopped",
    ]
    for earlier, later in zip(entries, entries[1:], strict=False):
        assert later.before == earlier.after  # the log chains without gaps


def test_audit_rows_are_complete(db_session: Session) -> None:
    apply(db_session, running("audit-exp"))
    ramp(db_session, key="audit-exp", coverage=0.5, actor="test:erin", reason="manual")
    db_session.expire_all()
    for entry in audit_rows(db_session, "audit-exp"):
        assert entry.experiment_key == "audit-exp"
        assert entry.actor
        assert entry.action in ("create", "ramp")
        assert entry.at.tzinfo is not None and entry.at.utcoffset() is not None
        assert isinstance(entry.after, dict)
        assert entry.after["key"] == "audit-exp"
        assert entry.before is None or isinstance(entry.before, dict)


def test_audit_log_is_newest_first_and_limited(db_session: Session) -> None:
    apply(db_session, running("log-exp"))
    for coverage in (0.1, 0.2, 0.3):
        ramp(db_session, key="log-exp", coverage=coverage, actor=ACTOR)
    latest = audit_log(db_session, key="log-exp", limit=2)
    assert [(e.after or {})["coverage"] for e in latest] == [0.3, 0.2]
    assert audit_log(db_session, key="other-key") == []


def test_config_of_round_trips(db_session: Session) -> None:
    written = running(
        "round-trip",
        seed="rt-seed",
        coverage=0.05,
        traffic=[0.25, 0.75],
        targeting={
            "languages": {"include": ["python", "go"]},
            "orgs": {"exclude": ["acme"]},
            "ides": {"include": ["vscode"]},
        },
        arms=[
            {"name": "control", "weight": 0.25, "description": "base"},
            {
                "name": "hot",
                "weight": 0.75,
                "variant": {
                    "decoding": {"temperature": 0.8, "stop": ["\n\n"]},
                    "postprocess": {"trim": "lines", "max_lines": 4},
                    "fim_template": "qwen2.5-coder",
                },
            },
        ],
        guardrails=[
            {"metric": "latency_p95", "margin": 0.1},
            {"metric": "error_rate", "margin": 0.01},
        ],
    )
    apply(db_session, written)
    db_session.expire_all()
    assert config_of(get_experiment(db_session, "round-trip")) == written


def test_config_of_fills_in_seed_and_coverage(db_session: Session) -> None:
    apply(db_session, config("filled-in"))
    stored = config_of(get_experiment(db_session, "filled-in"))
    assert stored == config("filled-in", seed="filled-in", coverage=0.01)


def test_list_experiments_by_key_and_status(db_session: Session) -> None:
    apply(db_session, config("list-b"))
    apply(db_session, running("list-a"))
    apply(db_session, config("list-c", layer="other"))
    keys = [e.key for e in list_experiments(db_session) if e.key.startswith("list-")]
    assert keys == ["list-a", "list-b", "list-c"]
    running_keys = [e.key for e in list_experiments(db_session, status=Status.RUNNING)]
    assert "list-a" in running_keys
    assert "list-b" not in running_keys


def test_unknown_keys(db_session: Session) -> None:
    with pytest.raises(UnknownExperimentError, match="no experiment with key 'nope'"):
        get_experiment(db_session, "nope")
    with pytest.raises(UnknownExperimentError, match="'nope'"):
        set_status(db_session, key="nope", status=Status.RUNNING, actor=ACTOR)
    with pytest.raises(UnknownExperimentError, match="'nope'"):
        ramp(db_session, key="nope", coverage=0.5, actor=ACTOR)


def test_changes_commit_through_a_savepoint(db_session: Session) -> None:
    # The registry runs in the caller's transaction: a commit makes it visible to the session.
    apply(db_session, running("committed-exp"))
    db_session.commit()
    db_session.expire_all()
    assert get_experiment(db_session, "committed-exp").status == "running"


def test_reapplying_a_file_without_status_leaves_the_status_alone(db_session: Session) -> None:
    apply(db_session, running("no-status"))
    set_status(db_session, key="no-status", status=Status.PAUSED, actor=ACTOR)
    result = apply_definition(
        db_session, config=config("no-status", description="edited"), actor=ACTOR
    )
    assert result.changed == ("description",)
    assert result.experiment.status == "paused"


def test_capping_and_plan_are_kept_and_can_change_while_running(db_session: Session) -> None:
    apply(db_session, running("capped"))
    result = apply_definition(
        db_session,
        config=running(
            "capped",
            capping={"suggestions_per_user": {"absolute": 200}, "cpr_30": "off"},
            plan={"power": 0.9, "mde": 0.03},
        ),
        actor=ACTOR,
    )
    assert set(result.changed) == {"capping", "plan"}
    stored = config_of(get_experiment(db_session, "capped"))
    assert stored.capping_of("suggestions_per_user") == Capping(absolute=200)
    assert stored.capping_of("cpr_30") is None
    assert stored.capping_of("acceptance_rate") == DEFAULT_CAPPING
    assert (stored.plan.power, stored.plan.mde) == (0.9, 0.03)
