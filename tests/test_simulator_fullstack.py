"""Full-stack mode: a small fleet through the real gateway (local engine) and the real collector.

The gateway trusts the requests' simulated ``client_ts``, so its completion_served events and
exposures carry simulated time; every IDE event the fleet sends must be acknowledged and stored.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from core.auth.scopes import Scope
from experiments.variants import Decoding, Variant
from serving.gateway.assembly import assignment_service
from serving.gateway.config import GatewaySettings
from serving.gateway.main import create_app
from serving.gateway.server import running
from serving.local.engine import DEFAULT_CHECKPOINT, LocalEngine
from simulator.demo import demo_exists, drive_fleet, print_results, reset_demo
from simulator.direct import Timeline
from simulator.fullstack import Endpoints
from simulator.scenario import Scenario, load_scenario
from tests.apikeys import Key, commit_key
from tests.database import PgConnection
from tests.experiment_factories import CommittedRegistry

SCENARIO = Path(__file__).resolve().parent.parent / "examples" / "scenarios" / "demo.yaml"


@pytest.fixture(scope="module")
def engine_local() -> LocalEngine:
    return LocalEngine.load(DEFAULT_CHECKPOINT, threads=1)


@pytest.fixture
def gateway_url(
    engine_local: LocalEngine,
    database_url: str,
    collector_url: str,
    ingest_key: Key,
) -> Iterator[str]:
    settings = GatewaySettings.model_validate(
        {
            "database_url": database_url,
            "environment": "test",
            "default_variant": Variant(
                model=engine_local.model_name, decoding=Decoding(max_tokens=8)
            ),
            "collector_url": collector_url,
            "ingest_key": ingest_key.secret,
            "event_flush_interval_s": 0.05,
            "trust_client_time": True,
            "rate_limit_per_s": 10_000,
            "rate_limit_burst": 10_000,
            "registry_refresh_s": 0.2,
        }
    )
    with assignment_service(settings, database_url) as assignment:
        app = create_app(settings, {"local": engine_local}, assignment)
        with running(app) as url:
            yield url


@pytest.fixture
def cleanup_gate(pg: PgConnection) -> Iterator[None]:
    """Gate decisions and rollups are committed by the gate: remove them after the test."""
    yield
    pg.execute("DELETE FROM gate_decisions WHERE experiment_key = 'demo-lora'")
    pg.execute("TRUNCATE metric_rollup_daily, exposure_day_rollup, rollup_state")


def test_a_small_fleet_through_gateway_and_collector_loses_no_event(
    registry: CommittedRegistry,
    engine: Engine,
    database_url: str,
    collector_url: str,
    gateway_url: str,
    ingest_key: Key,
    pg: PgConnection,
    clean_events: None,
    cleanup_gate: None,
) -> None:
    demo = load_scenario(SCENARIO)
    fleet = demo.fleet.model_copy(update={"developers": 8, "suggestions_per_session": 3})
    # Everyone in the experiment from the start: eight developers at 20% might all be outside.
    experiment = demo.experiment.model_copy(update={"coverage": 1.0})
    scenario = Scenario.model_validate(
        dict(demo) | {"fleet": fleet, "days": 1.0, "experiment": experiment}
    )
    registry.apply(scenario.experiment)
    time.sleep(0.5)  # the assignment service's next refresh
    serve = commit_key(engine, "sim-fleet", [Scope.SERVE])
    endpoints = Endpoints(gateway_url, serve.secret, collector_url, ingest_key.secret)
    timeline = Timeline.for_scenario(scenario)
    out = io.StringIO()

    result, fleet_run = asyncio.run(
        drive_fleet(scenario, timeline, endpoints, database_url, out, concurrency=4, gate=True)
    )

    assert result.completions > 10
    assert fleet_run.gateway_errors == {}
    assert result.events_sent > result.completions
    assert result.events_acknowledged == result.events_sent
    assert result.events_stored == result.events_sent, out.getvalue()
    # The gateway logged every completion, at the simulated time it was asked for.
    served = pg.execute(
        "SELECT count(*) AS n, max(client_ts) AS last FROM completion_served "
        "WHERE user_id LIKE 'demo-dev-%%'"
    ).fetchone()
    assert served is not None and served["n"] == result.completions
    assert served["last"].timestamp() <= timeline.end
    exposures = pg.execute(
        "SELECT count(*) AS n, min(client_ts) AS first FROM exposure WHERE experiment = %s",
        (scenario.experiment.key,),
    ).fetchone()
    assert exposures is not None and exposures["n"] > 0
    assert exposures["first"].timestamp() >= timeline.experiment_start
    assert "gate: hold at coverage 1" in out.getvalue()

    # The demo's results: the compact table, the gate's decision, feedback per arm.
    report = io.StringIO()
    print_results(database_url, scenario, report)
    text = report.getvalue()
    assert "=== demo-lora: running, coverage 1 ===" in text
    assert "lora  all" in text and "acceptance" in text
    assert "hold     coverage 1: at the last stage" in text
    assert "Feedback per arm:" in text
    assert "~ too few users to test" in text

    # --reset removes the experiment and the fleet's events.
    reset_demo(database_url, scenario)
    assert not demo_exists(database_url, scenario)
    left = pg.execute("SELECT count(*) AS n FROM suggestion_shown WHERE user_id LIKE 'demo-dev-%%'")
    assert left.fetchone() == {"n": 0}
