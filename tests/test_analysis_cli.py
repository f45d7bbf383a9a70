"""``codelift analyze`` and ``codelift gate`` on committed data, as an operator runs them."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest

from simulator.synthetic import SyntheticConfig, load_synthetic
from tests.database import PgConnection, truncate_events
from tests.experiment_factories import CommittedRegistry
from tests.test_analysis import EXPERIMENT, definition
from tests.test_cli import run


@pytest.fixture
def committed_data(
    database_url: str, registry: CommittedRegistry, pg: PgConnection
) -> Iterator[None]:
    """A running experiment and synthetic events for it, committed; all removed afterwards."""
    registry.apply(definition())
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        load_synthetic(
            conn,
            SyntheticConfig(experiment=EXPERIMENT, users=800, events=30_000, days=4.0),
        )
    yield
    truncate_events(pg)
    pg.execute(
        "TRUNCATE exposure, metric_rollup_daily, exposure_day_rollup, rollup_state, gate_decisions"
    )


def test_analyze_prints_json_with_every_metric_per_arm(
    database_url: str, committed_data: None
) -> None:
    result = run(database_url, "analyze", EXPERIMENT, "--format", "json", "--by", "language")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["experiment"] == EXPERIMENT
    assert set(report["users_per_arm"]) == {"control", "treatment"}
    assert report["srm_p_value"] is not None
    assert report["time_range"][0] < report["time_range"][1]
    overall = [r for r in report["results"] if r["language"] is None]
    assert {r["metric"] for r in overall} >= {
        "acceptance_rate",
        "pct_code_written",
        "cpr_600_chars",
        "latency_mean_per_completion",
        "suggestions_per_user",
    }
    assert any(r["language"] for r in report["results"])
    first = overall[0]
    for field in ("lift_abs", "ci_abs", "p_abs", "lift_rel", "ci_rel", "p_rel", "seq_ci_rel"):
        assert field in first
    p95 = [r for r in overall if r["metric"] == "latency_p95"]
    assert p95 and p95[0]["control_mean"] > 0
    assert {r["family"] for r in overall} == {"primary", "secondary"}
    assert report["capping"]["acceptance_rate"] == "p95"
    assert isinstance(report["health"], list) and report["health"]


def test_analyze_prints_a_table(database_url: str, committed_data: None) -> None:
    result = run(database_url, "analyze", EXPERIMENT)
    assert result.exit_code == 0, result.output
    assert f"experiment {EXPERIMENT} (running" in result.stdout
    assert "acceptance_rate" in result.stdout and "guardrails" in result.stdout


def test_gate_reports_and_applies(database_url: str, committed_data: None) -> None:
    dry = run(database_url, "gate", EXPERIMENT)
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.startswith(f"{EXPERIMENT}: advance → coverage 0.5\n")
    applied = run(database_url, "gate", EXPERIMENT, "--apply")
    assert "(applied)" in applied.stdout
    listed = run(database_url, "experiments", "list")
    assert "coverage=0.5" in listed.stdout


def test_analyze_and_gate_refuse_unknown_experiments(database_url: str) -> None:
    assert run(database_url, "analyze", "nope").exit_code == 2
    assert run(database_url, "gate", "nope").exit_code == 2
    assert run(database_url, "gate").exit_code == 2


def test_db_rollup_brings_the_rollups_up_to_date(
    database_url: str, committed_data: None, pg: PgConnection
) -> None:
    result = run(database_url, "db", "rollup")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("rolled up ")
    row = pg.execute("SELECT count(*) AS n FROM metric_rollup_daily").fetchone()
    assert row is not None and row["n"] > 0
