"""The assignment service against the registry in PostgreSQL: targeting, layers, ramps, kill
switch, and a running service picking up a change committed elsewhere."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from experiments.assignment.service import (
    ArmAssignment,
    Assignment,
    AssignmentRequest,
    AssignmentService,
)
from experiments.assignment.snapshot import RegistrySnapshot, load_snapshot
from experiments.definitions.registry import apply_definition, registry_version
from experiments.definitions.status import Status
from experiments.variants import Variant
from tests.database import PgConnection
from tests.experiment_factories import (
    DEFAULT_VARIANT,
    CommittedRegistry,
    arm,
    definition,
)

USERS = [f"user-{number:05d}" for number in range(10_000)]
# Pearson chi-square, 1 degree of freedom, p = 0.001: the users below are fixed, so a result
# above it would be a real dependence, not bad luck on a rerun.
CHI2_1DF_P001 = 10.828


@pytest.fixture
def service(engine: Engine, registry: CommittedRegistry) -> Iterator[AssignmentService]:
    service = AssignmentService(engine, DEFAULT_VARIANT, refresh_interval_s=0.05)
    yield service
    service.stop()


def request(
    user_id: str, *, language: str = "python", org: str = "acme", ide: str = "vscode"
) -> AssignmentRequest:
    return AssignmentRequest(user_id=user_id, language=language, org=org, ide=ide)


def arm_of(assignment: Assignment, experiment: str) -> str | None:
    return assignment.arm_names().get(experiment)


def arms_of(service: AssignmentService, experiment: str) -> dict[str, str | None]:
    return {user: arm_of(service.assign(request(user)), experiment) for user in USERS}


def chi_square_2x2(table: list[list[int]]) -> float:
    """Pearson's chi-square statistic of independence for a 2x2 table."""
    total = sum(sum(row) for row in table)
    rows = [sum(row) for row in table]
    columns = [sum(column) for column in zip(*table, strict=True)]
    statistic = 0.0
    for i in range(2):
        for j in range(2):
            expected = rows[i] * columns[j] / total
            statistic += (table[i][j] - expected) ** 2 / expected
    return statistic


def test_load_snapshot_compiles_running_experiments_in_application_order(
    db_session: Session,
) -> None:
    for config in (
        definition("zeta", layer="b", traffic=(0.0, 0.5), coverage=0.5, seed="zeta-seed"),
        definition("alpha", layer="b", traffic=(0.5, 1.0)),
        definition("omega", layer="a", arms=[arm("x", 0.25), arm("y", 0.75, model="m-y")]),
        definition("draft", layer="c", status=Status.DRAFT),
    ):
        apply_definition(db_session, config=config, actor="tests")
    snapshot = load_snapshot(db_session)
    assert snapshot.version == registry_version(db_session)
    assert [e.key for e in snapshot.experiments] == ["omega", "alpha", "zeta"]
    omega, _, zeta = snapshot.experiments
    assert [(a.low, a.high) for a in zeta.arms] == [(0.0, 0.25), (0.5, 0.75)]
    assert (zeta.seed, zeta.layer_seed, zeta.traffic_low, zeta.traffic_high) == (
        "zeta-seed",
        "layer:b",
        0.0,
        0.5,
    )
    assert omega.arms[1].overrides.model == "m-y"
    assert omega.arms[1].assignment == ArmAssignment(experiment="omega", arm="y", layer="a")


def test_no_experiments_serves_the_default_variant(service: AssignmentService) -> None:
    service.refresh()
    assignment = service.assign(request("user-1"))
    assert assignment.arms == ()
    assert assignment.variant == DEFAULT_VARIANT
    assert assignment.snapshot_version == service.snapshot.version >= 0


@pytest.mark.parametrize(
    ("language", "org", "ide", "targeted"),
    [
        ("python", "acme", "vscode", True),
        ("go", "globex", "intellij", True),
        ("rust", "acme", "vscode", False),  # language not included
        ("python", "initech", "vscode", False),  # org excluded
        ("python", "acme", "neovim", False),  # IDE not included
    ],
)
def test_targeting_includes_and_excludes(
    registry: CommittedRegistry,
    service: AssignmentService,
    language: str,
    org: str,
    ide: str,
    targeted: bool,
) -> None:
    registry.apply(
        definition(
            "fim-prompt",
            targeting={
                "languages": {"include": ["python", "go"]},
                "orgs": {"exclude": ["initech"]},
                "ides": {"include": ["vscode", "intellij"]},
            },
        )
    )
    service.refresh()
    for user in USERS[:200]:
        assignment = service.assign(request(user, language=language, org=org, ide=ide))
        # Full coverage, full traffic: a targeted user is always in an arm.
        assert (arm_of(assignment, "fim-prompt") is not None) is targeted


def test_disjoint_slices_of_one_layer_are_mutually_exclusive(
    registry: CommittedRegistry, service: AssignmentService
) -> None:
    registry.apply(definition("model-a", layer="model", traffic=(0.0, 0.4)))
    registry.apply(definition("model-b", layer="model", traffic=(0.4, 1.0)))
    service.refresh()
    in_a = in_b = 0
    for user in USERS:
        arms = service.assign(request(user)).arm_names()
        assert not ("model-a" in arms and "model-b" in arms), user
        # The slices cover the layer and coverage is full: everyone is in exactly one.
        assert "model-a" in arms or "model-b" in arms, user
        in_a += "model-a" in arms
        in_b += "model-b" in arms
    assert in_a / len(USERS) == pytest.approx(0.4, abs=0.02)
    assert in_b / len(USERS) == pytest.approx(0.6, abs=0.02)


def test_same_slices_in_different_layers_are_uncorrelated(
    registry: CommittedRegistry, service: AssignmentService
) -> None:
    registry.apply(definition("decoding", layer="decoding", traffic=(0.0, 0.5)))
    registry.apply(definition("context", layer="context", traffic=(0.0, 0.5)))
    service.refresh()
    membership = [[0, 0], [0, 0]]
    for user in USERS:
        arms = service.assign(request(user)).arm_names()
        membership["decoding" in arms]["context" in arms] += 1
    assert chi_square_2x2(membership) < CHI2_1DF_P001, membership
    assert membership[1][1] / len(USERS) == pytest.approx(0.25, abs=0.02)


def test_arms_of_experiments_in_different_layers_are_uncorrelated(
    registry: CommittedRegistry, service: AssignmentService
) -> None:
    registry.apply(definition("decoding", layer="decoding"))
    registry.apply(definition("context", layer="context"))
    service.refresh()
    arms_table = [[0, 0], [0, 0]]
    for user in USERS:
        arms = service.assign(request(user)).arm_names()
        arms_table[arms["decoding"] == "treatment"][arms["context"] == "treatment"] += 1
    assert chi_square_2x2(arms_table) < CHI2_1DF_P001, arms_table


def test_overrides_apply_by_layer_then_key(
    registry: CommittedRegistry, service: AssignmentService
) -> None:
    # Everyone in the only arm of each: the variant shows the order overrides were applied in.
    registry.apply(
        definition(
            "b-exp",
            layer="b-layer",
            arms=[arm("hot", 0.5, decoding={"temperature": 0.9}), arm("hot2", 0.5)],
        )
    )
    registry.apply(
        definition(
            "a-exp",
            layer="a-layer",
            arms=[
                arm("big", 0.5, model="starcoder2-7b", decoding={"temperature": 0.1}),
                arm("big2", 0.5, model="starcoder2-7b", decoding={"temperature": 0.1}),
            ],
        )
    )
    service.refresh()
    for user in USERS[:500]:
        assignment = service.assign(request(user))
        assert [a.layer for a in assignment.arms] == ["a-layer", "b-layer"]
        variant = assignment.variant
        assert variant.model == "starcoder2-7b"
        expected_temperature = 0.9 if arm_of(assignment, "b-exp") == "hot" else 0.1
        assert variant.decoding.temperature == expected_temperature
        # Untouched fields keep the default variant's values.
        assert variant.decoding.max_tokens == DEFAULT_VARIANT.decoding.max_tokens


def test_a_ramp_keeps_every_user_in_their_arm_and_only_adds_users(
    registry: CommittedRegistry, service: AssignmentService
) -> None:
    registry.apply(
        definition(
            "ramped",
            coverage=0.01,
            arms=[arm("control", 0.34), arm("a", 0.33, model="m-a"), arm("b", 0.33, model="m-b")],
        )
    )
    service.refresh()
    before = arms_of(service, "ramped")
    assert sum(a is not None for a in before.values()) / len(USERS) == pytest.approx(
        0.01, abs=0.005
    )
    for coverage in (0.05, 0.25, 0.5, 1.0):
        registry.ramp("ramped", coverage)
        assert service.refresh() is True
        after = arms_of(service, "ramped")
        moved = [u for u, a in before.items() if a is not None and after[u] != a]
        assert moved == [], f"coverage {coverage}: {len(moved)} users changed arm"
        share = sum(a is not None for a in after.values()) / len(USERS)
        assert share == pytest.approx(coverage, abs=0.02)
        before = after
    assert all(a is not None for a in before.values())


def test_refresh_reloads_only_when_the_registry_changed(
    registry: CommittedRegistry, service: AssignmentService
) -> None:
    registry.apply(definition("steady"))
    assert service.refresh() is True
    snapshot = service.snapshot
    first = service.assign(request("user-1"))
    assert service.refresh() is False
    assert service.snapshot is snapshot
    assert service.assign(request("user-1")) is first  # still served from the cache
    assert service.last_refreshed_at is not None


@pytest.mark.parametrize("status", [Status.PAUSED, Status.STOPPED, Status.SHIPPED])
def test_kill_switch_returns_everyone_to_the_default_on_the_next_refresh(
    registry: CommittedRegistry, service: AssignmentService, status: Status
) -> None:
    registry.apply(
        definition("killed", arms=[arm("a", 0.5, model="m-a"), arm("b", 0.5, model="m-b")])
    )
    registry.apply(definition("other", layer="other", targeting={"languages": {"include": ["go"]}}))
    service.refresh()
    assert all(arm_of(service.assign(request(u)), "killed") for u in USERS[:1000])

    registry.set_status("killed", status)
    assert service.refresh() is True
    for user in USERS[:1000]:
        assignment = service.assign(request(user))
        assert assignment.arms == ()
        assert assignment.variant == DEFAULT_VARIANT


def test_a_resumed_experiment_gives_users_their_old_arms(
    registry: CommittedRegistry, service: AssignmentService
) -> None:
    registry.apply(definition("resumed", coverage=0.5))
    service.refresh()
    before = arms_of(service, "resumed")
    registry.set_status("resumed", Status.PAUSED)
    service.refresh()
    assert set(arms_of(service, "resumed").values()) == {None}
    registry.set_status("resumed", Status.RUNNING)
    service.refresh()
    assert arms_of(service, "resumed") == before


def test_draft_experiments_assign_nobody(
    registry: CommittedRegistry, service: AssignmentService
) -> None:
    registry.apply(definition("drafted", status=Status.DRAFT))
    service.refresh()
    assert service.snapshot.experiments == ()
    assert service.assign(request("user-1")).arms == ()


def test_a_running_service_sees_a_ramp_committed_elsewhere_within_5_s(
    registry: CommittedRegistry, engine: Engine
) -> None:
    registry.apply(definition("live-ramp", coverage=0.0))
    service = AssignmentService(engine, DEFAULT_VARIANT, refresh_interval_s=0.2)
    service.start()
    try:
        assert [e.key for e in service.snapshot.experiments] == ["live-ramp"]
        assert service.assign(request("user-1")).arms == ()
        registry.ramp("live-ramp", 1.0)
        ramped_at = time.monotonic()
        deadline = ramped_at + 5.0
        while not service.assign(request("user-1")).arms and time.monotonic() < deadline:
            time.sleep(0.01)
        delay = time.monotonic() - ramped_at
        assert service.assign(request("user-1")).arms, f"not seen after {delay:.2f} s"
        assert delay < 5.0
    finally:
        service.stop()


def test_a_service_that_cannot_reach_the_database_serves_the_default() -> None:
    # Port 1 refuses connections at once: start() logs the failure, assign() still answers.
    service = AssignmentService(
        "postgresql://postgres@127.0.0.1:1/none", DEFAULT_VARIANT, refresh_interval_s=0.05
    )
    service.start()
    try:
        assert service.refresh_errors >= 1
        assert service.last_refreshed_at is None
        assignment = service.assign(request("user-1"))
        assert assignment.arms == ()
        assert assignment.variant == DEFAULT_VARIANT
    finally:
        service.stop()


def test_an_unusable_row_assigns_nobody_and_does_not_stop_other_changes(
    registry: CommittedRegistry, service: AssignmentService, pg: PgConnection
) -> None:
    registry.apply(definition("broken", layer="one"))
    registry.apply(definition("healthy", layer="two"))
    # Written behind the registry's back (a bad migration, a manual edit).
    pg.execute("""UPDATE experiments SET targeting = '{"languages": 5}' WHERE key = 'broken'""")
    service.refresh()
    assert service.snapshot.unusable == ("broken",)
    assert service.assign(request("user-1")).arm_names().keys() == {"healthy"}

    registry.set_status("healthy", Status.PAUSED)
    assert service.refresh() is True
    assert service.assign(request("user-1")).arms == ()


def test_snapshot_is_immutable(registry: CommittedRegistry, service: AssignmentService) -> None:
    registry.apply(definition("frozen"))
    service.refresh()
    snapshot: RegistrySnapshot = service.snapshot
    with pytest.raises(AttributeError):
        snapshot.version = 0  # type: ignore[misc]
    assert isinstance(service.assign(request("user-1")).variant, Variant)
