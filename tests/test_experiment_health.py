"""Experiment health checks on real PostgreSQL: SRM per first-exposure language and IDE (Holm-
corrected), users exposed to several arms, the shown-rate check, and the gate halting on a
failed check and storing them all."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterator, Sequence

import pytest
from alembic import command
from sqlalchemy import Connection, create_engine, insert, inspect, select, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from collector.models import ExposureRow
from core.db.connection import sqlalchemy_url
from experiments.analysis.gate_models import GateDecisionRow
from experiments.analysis.gate_runner import run_gate
from experiments.analysis.gates import Decision, GateInput
from experiments.analysis.health import (
    MIN_EXPECTED_USERS,
    SRM_THRESHOLD,
    HealthCheck,
    HealthStatus,
    exposure_counts,
    health_checks,
    multiple_exposures_check,
    shown_rate_checks,
    worst,
)
from experiments.analysis.stats import Comparison, compare
from experiments.analysis.stats.moments import RatioMoments
from experiments.definitions.config import ExperimentConfig
from experiments.definitions.models import Experiment
from experiments.definitions.registry import apply_definition, config_of, get_experiment
from experiments.definitions.status import Status
from migrations.runner import alembic_config, upgrade
from tests.database import fresh_database, utc_today
from tests.experiment_definitions import config

EXPERIMENT = "health"
START = dt.datetime.combine(utc_today() - dt.timedelta(days=2), dt.time(9), dt.UTC)
# (language, control users, lora users). python and java are far off 50/50 in opposite
# directions (the overall split stays even); go's raw p (≈ 0.00067) is below the threshold but
# its Holm-adjusted p over four languages (x 2) is not; elm is too small for χ².
IMBALANCED = (("python", 300, 200), ("java", 100, 268), ("go", 234, 166), ("rust", 100, 100))
TINY = ("elm", 2, 1)


def definition() -> ExperimentConfig:
    return config(
        EXPERIMENT,
        status="running",
        targeting={},
        arms=[{"name": "control", "weight": 0.5}, {"name": "lora", "weight": 0.5}],
        coverage=0.01,
    )


class Exposures:
    """Exposure rows inserted in the test's transaction, one per call (users numbered)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.users = 0

    def add(self, user: str, arm: str, *, language: str, ide: str, after: dt.timedelta) -> None:
        ts = START + after
        self.conn.execute(
            insert(ExposureRow),
            [
                {
                    # Random ids: a client logs an exposure per session, each its own event.
                    "event_id": uuid.uuid4(),
                    "client_ts": ts,
                    "received_at": ts,
                    "schema_version": 1,
                    "user_id": user,
                    "session_id": f"s-{user}",
                    "ide": ide,
                    "plugin_version": "1.0",
                    "language": language,
                    "experiment": EXPERIMENT,
                    "arm": arm,
                }
            ],
        )

    def split(self, rows: Sequence[tuple[str, int, int]]) -> None:
        """Users per (language, control, lora); IDEs alternate within each arm, so they are
        balanced whatever the languages are."""
        for language, *per_arm in rows:
            for arm, n in zip(("control", "lora"), per_arm, strict=True):
                for i in range(n):
                    self.users += 1
                    ide = "vscode" if i % 2 else "jetbrains"
                    self.add(
                        f"u{self.users}",
                        arm,
                        language=language,
                        ide=ide,
                        after=dt.timedelta(minutes=self.users),
                    )


@pytest.fixture
def exposures(conn: Connection) -> Exposures:
    return Exposures(conn)


def checks_for(conn: Connection, users_per_arm: dict[str, int]) -> list[HealthCheck]:
    return health_checks(
        conn, definition(), users_per_arm=users_per_arm, display={}, per_opportunity={}
    )


def by_slice(checks: Sequence[HealthCheck], name: str) -> dict[str | None, HealthCheck]:
    return {check.slice: check for check in checks if check.name == name}


def test_language_imbalance_fails_the_slice_srm_after_holm(
    conn: Connection, exposures: Exposures
) -> None:
    exposures.split([*IMBALANCED, TINY])
    counts = exposure_counts(conn, experiment=EXPERIMENT)
    assert counts.by("language")["python"] == {"control": 300, "lora": 200}
    overall = {"control": 736, "lora": 735}
    assert {arm: sum(c.get(arm, 0) for c in counts.by("ide").values()) for arm in overall} == (
        overall
    )
    checks = checks_for(conn, overall)

    [srm] = [c for c in checks if c.name == "srm"]
    assert srm.status is HealthStatus.PASS
    languages = by_slice(checks, "srm_language")
    assert {k: v.status for k, v in languages.items()} == {
        "python": HealthStatus.FAIL,
        "java": HealthStatus.FAIL,
        "go": HealthStatus.PASS,
        "rust": HealthStatus.PASS,
        None: HealthStatus.PASS,
    }
    go = languages["go"].figures
    # Below the threshold alone, not after the correction across the four languages tested.
    assert go["p_value"] == pytest.approx(0.000674, abs=1e-5)
    assert go["p_adjusted"] == pytest.approx(2 * 0.000674, abs=2e-5)
    assert go["slices_tested"] == 4
    python = languages["python"]
    # χ² = 2 × 50² / 250 = 20 on 1 degree of freedom.
    assert python.figures["p_value"] == pytest.approx(7.744e-6, rel=1e-3)
    assert "sample ratio mismatch in language python: users control 300, lora 200" in (
        python.reason
    )
    assert f"< {SRM_THRESHOLD}" in python.reason
    # elm is named as not tested, with the rule that left it out.
    skipped = languages[None]
    assert "elm (3 users)" in skipped.reason
    assert f"< {MIN_EXPECTED_USERS:g}" in skipped.reason
    # IDEs alternate within every arm: balanced.
    assert {c.status for c in by_slice(checks, "srm_ide").values()} == {HealthStatus.PASS}
    assert worst(checks) is HealthStatus.FAIL


def test_a_balanced_split_passes(conn: Connection, exposures: Exposures) -> None:
    exposures.split([("python", 200, 200), ("typescript", 150, 150)])
    checks = checks_for(conn, {"control": 350, "lora": 350})
    assert worst(checks) is HealthStatus.PASS
    assert {c.name for c in checks} == {"srm", "srm_language", "srm_ide", "multiple_exposures"}
    assert set(by_slice(checks, "srm_language")) == {"python", "typescript"}
    assert set(by_slice(checks, "srm_ide")) == {"vscode", "jetbrains"}
    [multiple] = [c for c in checks if c.name == "multiple_exposures"]
    assert multiple.figures == {"users": 0, "exposed": 700, "rate": 0.0}


def test_no_exposures_yet_pass_with_a_reason(conn: Connection) -> None:
    checks = checks_for(conn, {"control": 0, "lora": 0})
    assert [(c.name, c.status, c.reason) for c in checks] == [
        ("srm", HealthStatus.PASS, "no users exposed yet"),
        (
            "multiple_exposures",
            HealthStatus.PASS,
            "0 of 0 exposed users (0.00%) saw more than one arm; left out",
        ),
    ]


@pytest.mark.parametrize(("twice", "status"), [(1, "pass"), (5, "warn"), (15, "fail")])
def test_users_exposed_to_more_than_one_arm_are_counted(
    conn: Connection, exposures: Exposures, twice: int, status: str
) -> None:
    exposures.split([("python", 500, 500)])
    for i in range(twice):
        # Each first exposed in python, then again in java in the other arm.
        exposures.add(f"m{i}", "lora", language="python", ide="vscode", after=dt.timedelta(0))
        exposures.add(f"m{i}", "control", language="java", ide="vscode", after=dt.timedelta(1))
    counts = exposure_counts(conn, experiment=EXPERIMENT)
    assert (counts.multiple, counts.exposed) == (twice, 1000 + twice)
    # Left out of the analysed users, so out of the slice SRM too.
    assert counts.by("language") == {"python": {"control": 500, "lora": 500}}
    [check] = [
        c for c in checks_for(conn, {"control": 500, "lora": 500}) if c.name == "multiple_exposures"
    ]
    assert check.status.value == status
    assert check.figures["rate"] == pytest.approx(twice / (1000 + twice))
    assert f"{twice} of {1000 + twice} exposed users" in check.reason
    # The analysis' own count, when given, is the one reported (the report and checks agree).
    [given] = [
        c
        for c in health_checks(
            conn,
            definition(),
            users_per_arm={"control": 500, "lora": 500},
            multiple_arm_users=twice,
            display={},
            per_opportunity={},
        )
        if c.name == "multiple_exposures"
    ]
    assert given == check


def test_the_first_exposure_decides_a_users_language_and_ide(
    conn: Connection, exposures: Exposures
) -> None:
    exposures.add("u", "lora", language="go", ide="neovim", after=dt.timedelta(hours=2))
    exposures.add("u", "lora", language="python", ide="vscode", after=dt.timedelta(hours=1))
    counts = exposure_counts(conn, experiment=EXPERIMENT)
    assert counts.analysed == {("lora", "python", "vscode"): 1}
    # Before the first exposure nothing counts (the analysis "as of" a day).
    assert exposure_counts(conn, experiment=EXPERIMENT, until=START.date()).exposed == 0


@pytest.mark.parametrize(
    ("thresholds", "status"),
    [
        ((1, 1000), "pass"),
        ((2, 1000), "warn"),
        ((10, 1000), "warn"),
        ((11, 1000), "fail"),
        # 2 % of a 50-user stage is one shared laptop, not a broken assignment.
        ((1, 50), "warn"),
        ((9, 300), "warn"),
        ((10, 300), "fail"),
    ],
)
def test_multiple_exposure_thresholds(thresholds: tuple[int, int], status: str) -> None:
    multiple, exposed = thresholds
    # 0.1 % and 1 % are the limits, both exclusive.
    assert multiple_exposures_check(multiple=multiple, exposed=exposed).status.value == status


# --- shown rate -----------------------------------------------------------------------------------


# A multiple of the three per-user values cycled through, so the means are exact.
USERS = 2001


def ratio(pairs: Sequence[tuple[float, float]], users: int) -> RatioMoments:
    """Moments of ``users`` users cycling through per-user (m, d) ``pairs``."""
    rows = [pairs[i % len(pairs)] for i in range(users)]
    return RatioMoments(
        n=users,
        m_sum=sum(m for m, _ in rows),
        m_sum_squares=sum(m * m for m, _ in rows),
        d_sum=sum(d for _, d in rows),
        d_sum_squares=sum(d * d for _, d in rows),
        md_sum=sum(m * d for m, d in rows),
    )


def comparison(
    control: list[tuple[float, float]], treatment: list[tuple[float, float]]
) -> Comparison:
    return compare(ratio(control, USERS), ratio(treatment, USERS), sequential=True, cuped=False)


# Per user: (shown, served) and (accepted, served). The treatment shows 20 % more suggestions and
# gets 8 % more accepted per served completion.
SHOWN_CONTROL = [(4.0, 10.0), (5.0, 10.0), (6.0, 10.0)]
SHOWN_MORE = [(5.0, 10.0), (6.0, 10.0), (7.0, 10.0)]
ACCEPTED_CONTROL = [(2.0, 10.0), (2.5, 10.0), (3.0, 10.0)]
ACCEPTED_MORE = [(2.2, 10.0), (2.7, 10.0), (3.2, 10.0)]


def test_an_arm_that_displays_more_is_flagged_with_acceptance_per_opportunity() -> None:
    display = {"lora": comparison(SHOWN_CONTROL, SHOWN_MORE)}
    per_opportunity = {"lora": comparison(ACCEPTED_CONTROL, ACCEPTED_MORE)}
    [check] = shown_rate_checks(display, per_opportunity)
    assert (check.name, check.slice, check.status) == ("shown_rate", "lora", HealthStatus.WARN)
    assert check.reason.startswith("display rate +20.0% in lora (sequential p = ")
    assert "acceptance per shown suggestion compares different suggestions" in check.reason
    assert "acceptance per opportunity +8.0%, sequential CI [" in check.reason
    assert check.figures["lift"] == pytest.approx(0.2)
    assert check.figures["per_opportunity_lift_rel"] == pytest.approx(0.08)
    # The sequential p-value is the one judged (the gate looks again and again).
    assert check.figures["p_value"] == display["lora"].seq_p_rel


def test_an_unchanged_display_rate_passes() -> None:
    display = {"lora": comparison(SHOWN_CONTROL, SHOWN_CONTROL[::-1])}
    [check] = shown_rate_checks(display, {})
    assert check.status is HealthStatus.PASS
    assert check.reason.startswith("display rate +0.0% in lora (sequential p = 1)")
    assert check.reason.endswith(": no significant change at 0.01")


def test_a_display_rate_without_a_trusted_test_passes_and_says_why() -> None:
    empty = RatioMoments(0, 0.0, 0.0, 0.0, 0.0, 0.0)
    [check] = shown_rate_checks({"lora": compare(empty, empty, sequential=True)}, {})
    assert (check.status, check.reason) == (
        HealthStatus.PASS,
        "display rate in lora not tested (no_users)",
    )
    few = dataclasses.replace(comparison(SHOWN_CONTROL, SHOWN_MORE), low_power=True)
    [check] = shown_rate_checks({"lora": few}, {})
    assert (check.status, check.reason) == (
        HealthStatus.PASS,
        "display rate in lora not tested (too few users)",
    )


# --- the gate -------------------------------------------------------------------------------------


@pytest.fixture
def session(conn: Connection) -> Iterator[Session]:
    session = Session(bind=conn, join_transaction_mode="create_savepoint")
    yield session
    session.close()


def health_analyzer(
    session: Session, experiment: Experiment
) -> tuple[GateInput, dict[str, object]]:
    """The gate's view with only the health checks (the analysis itself is tested elsewhere)."""
    counts = exposure_counts(session.connection(), experiment=experiment.key)
    users = {"control": 0, "lora": 0}
    for (arm, _, _), n in counts.analysed.items():
        users[arm] += n
    shown = {"lora": comparison(SHOWN_CONTROL, SHOWN_MORE)}
    checks = health_checks(
        session.connection(),
        config_of(experiment),
        users_per_arm=users,
        display=shown,
        per_opportunity={"lora": comparison(ACCEPTED_CONTROL, ACCEPTED_MORE)},
    )
    gate_input = GateInput(
        users_per_arm=users,
        srm_p_value=0.9,
        primary=(),
        guardrail_tests=(),
        non_inferiority=(),
        health=checks,
    )
    return gate_input, {"users_per_arm": users}


def test_the_gate_halts_on_a_failed_check_and_stores_every_check(
    session: Session, exposures: Exposures
) -> None:
    apply_definition(session, config=definition(), actor="test")
    exposures.split(IMBALANCED)
    decision = run_gate(
        session, key=EXPERIMENT, analyze=health_analyzer, apply=True, actor="gate:test"
    )
    assert decision.decision is Decision.HALT
    halts = [r for r in decision.reasons if r.startswith("health check failed: ")]
    assert [r.split(":")[1].strip() for r in halts] == [
        "sample ratio mismatch in language java",
        "sample ratio mismatch in language python",
    ]
    # The warning is listed too, after what decided.
    assert decision.reasons[-1].startswith("health warning: display rate +20.0% in lora")
    assert get_experiment(session, EXPERIMENT).status == Status.PAUSED.value
    [row] = session.scalars(
        select(GateDecisionRow).where(GateDecisionRow.experiment_key == EXPERIMENT)
    ).all()
    assert row.decision == "halt"
    assert row.health == [check.to_dict() for check in decision.health]
    stored = {(c["name"], c["slice"]): c["status"] for c in row.health}
    assert stored[("srm_language", "python")] == "fail"
    assert stored[("srm_language", "rust")] == "pass"
    assert stored[("shown_rate", "lora")] == "warn"
    assert stored[("srm", None)] == "pass"
    [python] = [c["figures"] for c in row.health if c["slice"] == "python"]
    assert isinstance(python, dict)
    assert set(python) == {"p_value", "p_adjusted", "slices_tested", "users"}
    assert python["users"] == {"control": 300, "lora": 200}


def test_a_healthy_experiment_is_not_halted(session: Session, exposures: Exposures) -> None:
    apply_definition(session, config=definition(), actor="test")
    exposures.split([("python", 200, 200), ("java", 120, 120)])
    decision = run_gate(
        session, key=EXPERIMENT, analyze=health_analyzer, apply=False, actor="gate:test"
    )
    assert decision.decision is not Decision.HALT
    assert sum(1 for r in decision.reasons if r.startswith("health warning: ")) == 1


# --- the migration --------------------------------------------------------------------------------

HEALTH_REVISION, BEFORE = "c5d2e8f1a3b7", "b7c4e1a9d2f5"


def gate_columns(url: str) -> set[str]:
    engine = create_engine(sqlalchemy_url(url), poolclass=NullPool)
    try:
        return {column["name"] for column in inspect(engine).get_columns("gate_decisions")}
    finally:
        engine.dispose()


def test_the_health_column_migrates_up_and_down() -> None:
    with fresh_database() as url:
        alembic = alembic_config(url)
        command.upgrade(alembic, BEFORE)
        engine = create_engine(sqlalchemy_url(url), poolclass=NullPool)
        try:
            with engine.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO gate_decisions (experiment_key, decision, reasons, coverage, "
                        "evidence, applied, actor) VALUES ('old', 'hold', '[]', 0.1, '{}', false, "
                        "'gate')"
                    )
                )
            command.upgrade(alembic, HEALTH_REVISION)
            assert "health" in gate_columns(url)
            with engine.connect() as conn:
                # A decision stored before the checks existed has none.
                assert conn.execute(text("SELECT health FROM gate_decisions")).scalar_one() == []
            command.downgrade(alembic, BEFORE)
            assert "health" not in gate_columns(url)
            upgrade(url)
            assert "health" in gate_columns(url)
        finally:
            engine.dispose()
