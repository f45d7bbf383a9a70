"""The fleet simulator: scenarios, direct mode with ``--check``, and feedback text.

Direct-mode runs load into a transaction that is rolled back after each test (``conn``), next
to their experiment in the registry, so they leave nothing behind.

The small fleets here write three languages, not eight: the statistics are asymptotic, and with
a few dozen users per arm and language (heavy users weigh a lot in ratio metrics) the intervals
were too narrow. An A/A run of 700 developers in 8 languages gave kotlin's acceptance +55% with
CUPED (p 3e-5, +42% and p 0.08 without) and cpp's char-weighted acceptance -22% without CUPED,
both significant after Holm. The scenario files at full size (6,000 developers) pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from experiments.definitions.registry import apply_definition
from simulator import feedback_text
from simulator.check import CheckResult, run_check
from simulator.direct import DirectResult, run_direct
from simulator.fullstack import table_events
from simulator.scenario import Effect, Scenario, ScenarioError, load_scenario
from tests.database import PgConnection, truncate_events
from tests.experiment_factories import CommittedRegistry
from tests.test_cli import run

SCENARIOS = Path(__file__).resolve().parent.parent / "examples" / "scenarios"
# Small enough for a few seconds per run, large enough that a +30% effect is found and that
# each language has about a hundred users per arm.
DEVELOPERS = 700
LANGUAGES = {"python": 0.45, "typescript": 0.3, "java": 0.25}


def small(name: str, **fields: Any) -> Scenario:
    """A scenario file, shrunk for tests."""
    scenario = load_scenario(SCENARIOS / name)
    fleet = scenario.fleet.model_copy(update={"developers": DEVELOPERS, "languages": LANGUAGES})
    return Scenario.model_validate(dict(scenario) | {"fleet": fleet, "days": 2.0} | fields)


def simulate(conn: Connection, scenario: Scenario) -> tuple[DirectResult, CheckResult]:
    session = Session(bind=conn, join_transaction_mode="create_savepoint")
    apply_definition(session, config=scenario.experiment, actor="tests")
    session.flush()
    driver = conn.connection.driver_connection
    assert driver is not None
    # The default timeline ends before the last midnight: the same data every day.
    result = run_direct(driver, scenario, commit=False)
    return result, run_check(conn, scenario, result.truth)


STRONG = (
    Effect(arm="treatment", kind="acceptance", value=0.3, languages=("python",)),
    Effect(arm="treatment", kind="latency_ms", value=25.0),
)


def test_effect_scenario_is_found_and_its_truth_lies_in_every_interval(conn: Connection) -> None:
    scenario = small("effect.yaml", effects=STRONG, seed=12)
    result, check = simulate(conn, scenario)

    assert check.passed, check.render()
    assert result.users_per_arm["control"] > 200 and result.users_per_arm["treatment"] > 200
    assert result.rows["suggestion_shown"] > 10 * DEVELOPERS
    rows = {(r.metric, r.language): r for r in check.rows}
    python = rows[("acceptance_rate", "python")]
    assert python.truth == pytest.approx(0.3 / (1 + 0.3 * 0.75 / (1 - 0.25)), abs=0.08)
    assert python.ci is not None and python.ci[0] > 0, "a +30% effect must be detected"
    other = rows[("acceptance_rate", "java")]
    assert other.truth == pytest.approx(0.0, abs=1e-12)
    latency = rows[("latency_mean_per_completion", None)]
    assert latency.ci is not None and latency.ci[0] > 0

    # The same data judged as if no arm differed: the A/A check must fail on it.
    as_aa = Scenario.model_validate(dict(scenario) | {"effects": ()})
    verdict = run_check(conn, as_aa, result.truth)
    assert verdict.kind == "a/a" and not verdict.passed
    assert any(
        r.metric == "latency_mean_per_completion" and r.language is None and not r.ok
        for r in verdict.rows
    )


def test_aa_scenario_shows_no_significant_lift(conn: Connection) -> None:
    scenario = small("aa.yaml")
    assert scenario.is_aa
    result, check = simulate(conn, scenario)

    assert check.kind == "a/a"
    assert check.passed, check.render()
    languages = {r.language for r in check.rows}
    assert languages - {None} == set(LANGUAGES)
    # CUPED had a pre-period to work with.
    exposed = conn.execute(
        text("SELECT count(*) FROM exposure WHERE experiment = :k"), {"k": scenario.experiment.key}
    ).scalar_one()
    assert exposed == sum(result.users_per_arm.values())


def test_a_second_direct_run_of_a_scenario_adds_nothing(conn: Connection) -> None:
    scenario = small("aa.yaml", fleet={"developers": 30})
    driver = conn.connection.driver_connection
    assert driver is not None
    first = run_direct(driver, scenario, commit=False)
    second = run_direct(driver, scenario, commit=False)
    assert first.rows["exposure"] > 0 and first.rows["suggestion_shown"] > 0
    assert set(second.rows.values()) == {0}


@pytest.fixture
def cleanup_committed(registry: CommittedRegistry, pg: PgConnection) -> Iterator[None]:
    """For the command, which commits: remove its experiment, events and rollups afterwards."""
    registry.keys.add("sim-aa")
    yield
    truncate_events(pg)
    pg.execute("TRUNCATE metric_rollup_daily, exposure_day_rollup, rollup_state")


def test_simulate_command_loads_and_checks_an_aa_scenario(
    database_url: str, cleanup_committed: None
) -> None:
    result = run(
        database_url,
        "simulate",
        "--scenario",
        str(SCENARIOS / "aa.yaml"),
        "--developers",
        "300",
        "--days",
        "1",
        "--check",
    )
    assert result.exit_code == 0, result.output
    assert "events/min" in result.output
    assert "check (a/a): PASSED" in result.output


def test_simulate_command_names_a_bad_scenario(database_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nexperiment: {key: x}\n", encoding="utf-8")
    result = run(database_url, "simulate", "--scenario", str(bad))
    assert result.exit_code == 2
    assert "experiment" in result.output


def test_bad_scenarios_are_rejected_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nexperiment: ../nowhere.yaml\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match="experiment"):
        load_scenario(path)
    base = (SCENARIOS / "aa.yaml").read_text(encoding="utf-8")
    path.write_text(base + "effects:\n  - {arm: nobody, kind: acceptance, value: 0.1}\n")
    with pytest.raises(ScenarioError, match=r"effects\.0\.arm"):
        load_scenario(path)
    path.write_text(base.replace("days: 3", "days: 9"))
    with pytest.raises(ScenarioError, match="days"):
        load_scenario(path)


def test_novelty_fades_by_half_life() -> None:
    effect = Effect(arm="t", kind="acceptance", value=0.05, novelty=0.2, novelty_half_life_days=2)
    assert effect.at(0) == pytest.approx(0.25)
    assert effect.at(2) == pytest.approx(0.15)
    assert effect.at(40) == pytest.approx(0.05, abs=1e-6)


def test_feedback_comments_vary_within_a_theme() -> None:
    rng = np.random.default_rng(3)
    texts = {
        feedback_text.compose(rng, theme="boilerplate", positive=True, language="python")
        for _ in range(200)
    }
    assert len(texts) > 40
    negative = feedback_text.compose(rng, theme="latency", positive=False, language="rust")
    assert negative[0].isupper()
    themes = {feedback_text.pick_theme(rng, positive=False) for _ in range(300)}
    assert "wrong_suggestions" in themes and "boilerplate" not in themes


def test_rows_become_collector_events() -> None:
    uuid_bytes = bytes(range(16))
    table: Any = (
        {
            "event_id": ("uuid", np.array([uuid_bytes], dtype="S16")),
            "client_ts": ("timestamptz", np.array([0], dtype=np.int64)),
            "reason": ("text", np.array([b""])),
            "multiline": ("bool", np.array([1], dtype=np.uint8)),
        },
        {"reason": np.array([True])},
    )
    [event] = table_events("suggestion_shown", table)
    assert event == {
        "type": "suggestion_shown",
        "event_id": "00010203-0405-0607-0809-0a0b0c0d0e0f",
        "client_ts": "2000-01-01T00:00:00.000000Z",
        "multiline": True,
    }


def test_scenario_lift_sums_effects_for_the_arm_and_language() -> None:
    scenario = small(
        "effect.yaml",
        effects=(
            Effect(arm="treatment", kind="acceptance", value=0.1, languages=("python",)),
            Effect(arm="treatment", kind="acceptance", value=0.02),
        ),
    )
    assert scenario.lift("acceptance", "treatment", "python", 1.0) == pytest.approx(0.12)
    assert scenario.lift("acceptance", "treatment", "go", 1.0) == pytest.approx(0.02)
    assert scenario.lift("acceptance", "control", "python", 1.0) == 0.0
    assert dataclasses.is_dataclass(DirectResult)
