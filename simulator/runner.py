"""Setting a database up for a scenario and running it in direct mode (with ``--check``)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import psycopg
from sqlalchemy.orm import Session

from collector.partitions import maintain_partitions, partitioned_tables
from core.db.connection import libpq_conninfo, make_engine
from experiments.definitions.config import ExperimentConfig
from experiments.definitions.registry import apply_definition
from migrations.models import load_all_models
from simulator.check import CheckResult, run_check
from simulator.direct import DirectResult, Timeline, run_direct
from simulator.scenario import Scenario

ACTOR = "simulator"


def register_experiment(url: str, config: ExperimentConfig, *, actor: str = ACTOR) -> None:
    """Create the experiment in the registry, or update it to match the definition."""
    engine = make_engine(url, pool_size=1)
    try:
        with Session(engine) as session:
            apply_definition(session, config=config, actor=actor)
            session.commit()
    finally:
        engine.dispose()


def ensure_partitions(url: str, timeline: Timeline) -> None:
    """Daily partitions for every simulated day (and the day after, for late checks)."""
    first = dt.datetime.fromtimestamp(timeline.start, dt.UTC).date()
    last = dt.datetime.fromtimestamp(timeline.end, dt.UTC).date() + dt.timedelta(days=1)
    maintain_partitions(
        libpq_conninfo(url),
        partitioned_tables(load_all_models()),
        first_day=first,
        last_day=last,
    )


@dataclasses.dataclass(frozen=True)
class DirectRun:
    """A direct run and, when asked for, its check."""

    result: DirectResult
    check: CheckResult | None


def simulate_direct(
    url: str,
    scenario: Scenario,
    *,
    check: bool,
    cuped: bool = True,
    timeline: Timeline | None = None,
) -> DirectRun:
    """Register the experiment, generate and load the scenario, and check it if asked."""
    span = timeline or Timeline.for_scenario(scenario)
    register_experiment(url, scenario.experiment)
    ensure_partitions(url, span)
    with psycopg.connect(libpq_conninfo(url)) as conn:
        result = run_direct(conn, scenario, timeline=span)
    verdict = None
    if check:
        engine = make_engine(url, pool_size=1)
        try:
            with engine.begin() as connection:
                verdict = run_check(connection, scenario, result.truth, cuped=cuped)
        finally:
            engine.dispose()
    return DirectRun(result=result, check=verdict)
