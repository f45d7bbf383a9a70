"""``codelift demo``: the whole platform working, end to end, on one machine.

Database (embedded unless configured), schema, API keys, the collector and the gateway on the
local engine (child processes), the demo experiment from its YAML file, a day of history loaded
in bulk (the pre-period CUPED needs), then the fleet in full-stack mode through the simulated
days, the gate evaluated and applied after each day; then the results and the dashboard.

Simulated days pass much faster than real ones, so the gate is told the simulated time: a stage
has lasted as long as the simulated time since it began (its start is read from the audit log
as usual, and the simulated time elapsed since then is added).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import numpy as np
import psycopg
from sqlalchemy import text
from sqlalchemy.orm import Session

from collector.schemas import EVENT_TYPES
from core.auth.keys import create_api_key
from core.auth.scopes import Scope
from core.db.connection import libpq_conninfo, make_engine
from core.supervise import describe_exit
from dashboard.launch import DashboardFailed, DashboardProcess
from dashboard.settings import DashboardSettings
from experiments.analysis.analyze import analyze_experiment, gate_analyzer
from experiments.analysis.gate_runner import gate_history, run_gate, stage_started_at
from experiments.analysis.gates import Decision
from experiments.analysis.rollups import refresh_rollups
from experiments.definitions.registry import get_experiment
from experiments.variants import Decoding, Variant
from migrations.runner import upgrade
from simulator import demo_steps
from simulator.direct import Timeline, run_direct
from simulator.fleet import PLUGIN_VERSION, make_developers
from simulator.fullstack import Endpoints, EventSender, FullStackFleet, new_client
from simulator.progress import ProgressBar
from simulator.results_table import render_compact
from simulator.runner import ensure_partitions, register_experiment
from simulator.scenario import Scenario
from simulator.stack import running_stack

ACTOR = "demo"
# The gateway polls the registry every second: a ramp reaches it within this wait.
REGISTRY_PROPAGATION_S = 1.5
# The gateway's event logger flushes every 0.1 s and exposures every 0.5 s.
EVENT_SETTLE_S = 1.5
# How often the serving phase looks whether the dashboard still runs.
DASHBOARD_POLL_S = 0.5
DEFAULT_VARIANT = Variant(model="codelift-fim-small", decoding=Decoding(max_tokens=32))


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    """What ``codelift demo`` was asked for."""

    scenario: Scenario
    reset: bool = False
    serve: bool = True
    concurrency: int = 8
    collector_port: int | None = None
    gateway_port: int | None = None
    dashboard_port: int = 8501
    log_dir: Path = Path(".codelift/logs")


@dataclasses.dataclass
class DemoResult:
    """What the demo did, for the summary and the tests."""

    completions: int = 0
    events_sent: int = 0
    events_acknowledged: int = 0
    events_failed: int = 0
    events_stored: int = 0
    decisions: list[str] = dataclasses.field(default_factory=list)
    collector_batch_ms: list[float] = dataclasses.field(default_factory=list)
    wall_s: float = 0.0
    simulated: bool = False


def reset_demo(url: str, scenario: Scenario) -> None:
    """Delete the demo's experiment, its fleet's events and their rollups."""
    key = scenario.experiment.key
    prefix = f"{scenario.name}-dev-%"
    with psycopg.connect(libpq_conninfo(url), autocommit=True) as conn:
        # Event type names are their tables' names. Their ids go too: a rerun sends the same
        # seeded ids, which the store would otherwise take for retries of the deleted events.
        for table in EVENT_TYPES:
            conn.execute(
                f"DELETE FROM event_ids WHERE event_id IN "
                f"(SELECT event_id FROM {table} WHERE user_id LIKE %s)",
                (prefix,),
            )
            conn.execute(f"DELETE FROM {table} WHERE user_id LIKE %s", (prefix,))
        conn.execute("DELETE FROM gate_decisions WHERE experiment_key = %s", (key,))
        conn.execute("DELETE FROM experiment_audit WHERE experiment_key = %s", (key,))
        conn.execute("DELETE FROM experiments WHERE key = %s", (key,))
        conn.execute("UPDATE registry_version SET version = version + 1")
        # Rollups are per user: the fleet's rows go, everyone else's stay valid.
        conn.execute("DELETE FROM metric_rollup_daily WHERE user_id LIKE %s", (prefix,))
        conn.execute("DELETE FROM exposure_day_rollup WHERE experiment = %s", (key,))


def demo_exists(url: str, scenario: Scenario) -> bool:
    """Whether an earlier run left the demo's experiment in this database."""
    with psycopg.connect(libpq_conninfo(url)) as conn:
        row = conn.execute(
            "SELECT 1 FROM experiments WHERE key = %s", (scenario.experiment.key,)
        ).fetchone()
    return row is not None


def make_keys(url: str) -> tuple[str, str]:
    """A new ingest key and serve key for the fleet."""
    engine = make_engine(url, pool_size=1)
    try:
        with Session(engine) as session:
            _, ingest = create_api_key(session, name="demo-fleet-ingest", scopes=[Scope.INGEST])
            _, serve = create_api_key(session, name="demo-fleet-serve", scopes=[Scope.SERVE])
            session.commit()
    finally:
        engine.dispose()
    return ingest, serve


def prepare_live(url: str, scenario: Scenario, timeline: Timeline, out: TextIO) -> None:
    """Partitions, the pre-period's history (bulk) and the experiment, before the live days."""
    ensure_partitions(url, timeline)
    history = Timeline(
        start=timeline.start, experiment_start=timeline.end + 1, end=timeline.experiment_start
    )
    with psycopg.connect(libpq_conninfo(url)) as conn:
        loaded = run_direct(conn, scenario, timeline=history, coverage=0.0)
    out.write(
        f"history: {loaded.events:,} events of {scenario.pre_days:g} day(s) loaded "
        f"in {loaded.seconds:.1f} s\n"
    )
    register_experiment(url, scenario.experiment, actor=ACTOR)
    time.sleep(REGISTRY_PROPAGATION_S)


def _gate_after_day(url: str, key: str, *, sim_now: float, sim_stage_start: float) -> str:
    engine = make_engine(url, pool_size=1)
    try:
        with Session(engine) as session:
            refresh_rollups(session.connection())
            experiment = get_experiment(session, key)
            if experiment.status != "running":
                return f"{experiment.status} (no gate)"
            began = stage_started_at(session, experiment)
            now = began + dt.timedelta(seconds=sim_now - sim_stage_start)
            decision = run_gate(
                session, key=key, analyze=gate_analyzer, apply=True, actor=ACTOR, now=now
            )
            session.commit()
    finally:
        engine.dispose()
    target = f" → {decision.next_coverage:g}" if decision.next_coverage is not None else ""
    return f"{decision.decision.value} at coverage {decision.coverage:g}{target}"


async def drive_fleet(
    scenario: Scenario,
    timeline: Timeline,
    endpoints: Endpoints,
    url: str,
    out: TextIO,
    *,
    concurrency: int,
    gate: bool,
) -> tuple[DemoResult, FullStackFleet]:
    """The fleet through the gateway and collector, day by day; the gate after each day."""
    rng = np.random.default_rng(scenario.seed)
    developers = make_developers(scenario.fleet, rng, prefix=scenario.name)
    fleet = FullStackFleet(scenario, developers, endpoints, rng=rng, concurrency=concurrency)
    result = DemoResult(simulated=True)
    began = dt.datetime.now(dt.UTC)
    days = int(np.ceil(scenario.days))
    sim_stage_start = timeline.experiment_start
    async with new_client(concurrency) as client:
        sender = EventSender(client, endpoints)
        for day in range(days):
            start = timeline.experiment_start + day * 86_400
            end = min(timeline.end, start + 86_400)
            bar = ProgressBar(f"day {day + 1}/{days}", out=out)
            stats = await fleet.run_span(client, sender, start=start, end=end, progress=bar)
            bar.done(f"{stats.completions} completions, {stats.events} events")
            await asyncio.sleep(EVENT_SETTLE_S)
            result.completions += stats.completions
            if not gate:
                continue
            gate_began = time.perf_counter()
            decision = await asyncio.to_thread(
                _gate_after_day,
                url,
                scenario.experiment.key,
                sim_now=end,
                sim_stage_start=sim_stage_start,
            )
            result.decisions.append(f"day {day + 1}: {decision}")
            out.write(f"  gate: {decision} ({time.perf_counter() - gate_began:.1f} s)\n")
            if decision.startswith(Decision.ADVANCE.value):
                sim_stage_start = end
            await asyncio.sleep(REGISTRY_PROPAGATION_S)
        counts = sender.counts
    result.events_sent = counts.sent
    result.events_acknowledged = counts.acknowledged
    result.events_failed = counts.failed + counts.rejected
    result.collector_batch_ms = counts.batch_ms
    if sender.rejections:
        out.write(f"  collector rejected: {sender.rejections[:5]}\n")
    result.events_stored = stored_events(url, scenario, since=began)
    return result, fleet


def stored_events(url: str, scenario: Scenario, *, since: dt.datetime) -> int:
    """Rows of the fleet's IDE events received since ``since`` (completion_served is the
    gateway's, so it is not counted)."""
    total = 0
    with psycopg.connect(libpq_conninfo(url)) as conn:
        for table in (
            "suggestion_shown",
            "suggestion_outcome",
            "persistence_check",
            "typing_volume",
            "feedback",
        ):
            row = conn.execute(
                f"SELECT count(*) FROM {table} WHERE user_id LIKE %s AND received_at >= %s "
                "AND plugin_version = %s",
                (f"{scenario.name}-dev-%", since, PLUGIN_VERSION),
            ).fetchone()
            total += int(row[0]) if row else 0
    return total


def print_results(url: str, scenario: Scenario, out: TextIO) -> None:
    """The analysis per arm and language, the gate's decisions and the feedback per arm."""
    key = scenario.experiment.key
    engine = make_engine(url, pool_size=1)
    try:
        with engine.begin() as conn:
            refresh_rollups(conn)
            report = analyze_experiment(conn, scenario.experiment, by_language=True, cuped=True)
            feedback = demo_steps.tag_feedback(url, conn, key)
            conn.execute(text("SELECT 1"))
        with Session(engine) as session:
            experiment = get_experiment(session, key)
            history = list(reversed(gate_history(session, key=key)))
            status, coverage = experiment.status, experiment.coverage
    finally:
        engine.dispose()
    out.write(f"\n=== {key}: {status}, coverage {coverage:g} ===\n")
    out.write(render_compact(report) + "\n")
    out.write(f"(every metric: codelift analyze {key} --by language)\n")
    out.write("\nTrue effects in this simulation:\n")
    for effect in scenario.effects:
        where = ", ".join(effect.languages) or "all languages"
        novelty = (
            f" + novelty {effect.novelty:+.0%} halving every {effect.novelty_half_life_days:g} d"
            if effect.novelty
            else ""
        )
        out.write(f"  {effect.arm}: {effect.kind} {effect.value:+g} in {where}{novelty}\n")
    out.write("\nGate decisions:\n")
    for row in history:
        to = f" → {row.next_coverage:g}" if row.next_coverage is not None else ""
        reason = row.reasons[0] if row.reasons else ""
        out.write(f"  {row.decision:<8} coverage {row.coverage:g}{to}: {reason}\n")
    out.write("\nFeedback per arm:\n")
    for summary in feedback:
        share = summary.rated_positive / summary.rated if summary.rated else 0.0
        themes = ", ".join(f"{t} {s:.0%}" for t, s in summary.themes.items()) or (
            "no tagged comments"
        )
        out.write(
            f"  {summary.arm:<6} {summary.comments:>4} comments, {share:.0%} positive; {themes}\n"
        )


@contextlib.contextmanager
def _serving_dashboard(url: str, port: int, out: TextIO) -> Iterator[DashboardProcess]:
    dashboard = demo_steps.start_dashboard(url, port=port)
    out.write(f"\nDashboard: {dashboard.url}\n")
    if DashboardSettings().uses_development_passwords:
        out.write("  log in as admin / admin (development passwords; see README, Dashboard)\n")
    try:
        yield dashboard
    finally:
        demo_steps.stop_dashboard(dashboard)


def serve_until_interrupted(dashboard: DashboardProcess, out: TextIO) -> None:
    """Serve until Ctrl-C or SIGTERM; raise :class:`DashboardFailed` if the dashboard exits."""
    out.write("serving until Ctrl-C\n")
    out.flush()
    # The demo's command turns SIGTERM into KeyboardInterrupt: being asked to stop ends it well.
    with contextlib.suppress(KeyboardInterrupt):
        while (code := dashboard.process.poll()) is None:
            time.sleep(DASHBOARD_POLL_S)
        raise DashboardFailed(
            f"the dashboard (pid {dashboard.process.pid}) exited with {describe_exit(code)} "
            "while serving"
        )


def run_demo(url: str, options: DemoOptions, out: TextIO = sys.stdout) -> DemoResult:
    """Run the demo against the database at ``url``; blocks while serving (Ctrl-C stops)."""
    began = time.perf_counter()
    scenario = options.scenario
    upgrade(url)
    if options.reset:
        reset_demo(url, scenario)
    result = DemoResult()
    ingest_key, serve_key = make_keys(url)
    timeline = Timeline.for_scenario(scenario)
    with running_stack(
        database_url=url,
        ingest_key=ingest_key,
        default_variant=DEFAULT_VARIANT,
        log_dir=options.log_dir,
        collector_port=options.collector_port,
        gateway_port=options.gateway_port,
    ) as (collector_url, gateway_url):
        out.write(
            f"collector {collector_url}, gateway {gateway_url} "
            f"(up in {time.perf_counter() - began:.0f} s)\n"
        )
        if demo_exists(url, scenario):
            out.write("reusing the data of an earlier run (`--reset` to simulate again)\n")
        else:
            prepare_live(url, scenario, timeline, out)
            endpoints = Endpoints(gateway_url, serve_key, collector_url, ingest_key)
            result, _ = asyncio.run(
                drive_fleet(
                    scenario,
                    timeline,
                    endpoints,
                    url,
                    out,
                    concurrency=options.concurrency,
                    gate=True,
                )
            )
        results_began = time.perf_counter()
        print_results(url, scenario, out)
        out.write(f"(analysis in {time.perf_counter() - results_began:.1f} s)\n")
        result.wall_s = time.perf_counter() - began
        if result.simulated:
            lost = result.events_sent - result.events_acknowledged
            out.write(
                f"\nevents sent {result.events_sent:,}, acknowledged "
                f"{result.events_acknowledged:,}, stored {result.events_stored:,}, lost {lost}; "
                f"{result.completions:,} completions; {result.wall_s:.0f} s\n"
            )
        with _serving_dashboard(url, options.dashboard_port, out) as dashboard:
            if options.serve:
                serve_until_interrupted(dashboard, out)
    return result
