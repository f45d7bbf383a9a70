"""``codelift simulate`` and ``codelift demo``."""

from __future__ import annotations

import enum
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from core.cli_support import FAILURE_EXIT, CommandError, configured_database_url

if TYPE_CHECKING:
    from simulator.check import CheckResult
    from simulator.scenario import Scenario

DEMO_SCENARIO = Path(__file__).resolve().parents[2] / "examples" / "scenarios" / "demo.yaml"


def _interrupt_on_signals() -> None:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt, so the services are stopped in order.

    A shell starts background jobs with SIGINT ignored, and Python (and asyncio) then leave it
    ignored; a supervisor stops with SIGTERM, which would otherwise kill the demo without
    stopping its children.
    """

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)


class Mode(enum.StrEnum):
    """How the fleet reaches CodeLift."""

    DIRECT = "direct"
    FULL_STACK = "full-stack"


def _scenario(path: Path, developers: int | None, days: float | None) -> Scenario:
    from simulator.scenario import Scenario, ScenarioError, load_scenario

    try:
        scenario = load_scenario(path)
    except ScenarioError as exc:
        raise CommandError(f"--scenario: {exc}") from None
    fleet = scenario.fleet
    if developers is not None:
        fleet = fleet.model_copy(update={"developers": developers})
    update: dict[str, object] = {"fleet": fleet}
    if days is not None:
        update["days"] = days
    # Fields as objects, not dumps: a dump would mark every unset field of the experiment's
    # arms as set (to None), and the registry stores only the fields an arm sets.
    return Scenario.model_validate(dict(scenario) | update)


def simulate(
    scenario_path: Annotated[
        Path, typer.Option("--scenario", help="Scenario YAML (examples/scenarios/).")
    ],
    mode: Annotated[Mode, typer.Option(help="direct (bulk, fast) or full-stack (HTTP).")] = (
        Mode.DIRECT
    ),
    check: Annotated[
        bool, typer.Option(help="Compare the analysis with the scenario's true effects.")
    ] = False,
    developers: Annotated[int | None, typer.Option(help="Override the fleet's size.")] = None,
    days: Annotated[float | None, typer.Option(help="Override the simulated days.")] = None,
    concurrency: Annotated[int, typer.Option(help="Full stack: requests in flight.")] = 8,
    cuped: Annotated[bool, typer.Option(help="--check: analyze with CUPED (as analyze does).")] = (
        True
    ),
) -> None:
    """Simulate a fleet of developers using the assistant, with the scenario's true effects."""
    from migrations.runner import upgrade
    from simulator.runner import simulate_direct

    logging.basicConfig(level=logging.WARNING)
    scenario = _scenario(scenario_path, developers, days)
    with configured_database_url() as url:
        upgrade(url)
        if mode is Mode.DIRECT:
            run = simulate_direct(url, scenario, check=check, cuped=cuped)
            result = run.result
            typer.echo(
                f"{scenario.name}: {result.events:,} events in {result.seconds:.1f} s "
                f"({result.events / max(result.seconds, 1e-9) * 60:,.0f} events/min); "
                f"users per arm {result.users_per_arm}"
            )
            verdict = run.check
        else:
            verdict = _full_stack(url, scenario, check=check, concurrency=concurrency, cuped=cuped)
    if verdict is not None:
        typer.echo(verdict.render())
        if not verdict.passed:
            # A result, not an error: the check's verdict is printed above, as a test runner's.
            raise typer.Exit(code=FAILURE_EXIT)


def _full_stack(
    url: str, scenario: Scenario, *, check: bool, concurrency: int, cuped: bool
) -> CheckResult | None:
    import asyncio

    from core.db.connection import make_engine
    from simulator.check import run_check
    from simulator.demo import DEFAULT_VARIANT, drive_fleet, make_keys, prepare_live
    from simulator.direct import Timeline
    from simulator.fullstack import Endpoints
    from simulator.stack import ServiceFailed, running_stack

    ingest_key, serve_key = make_keys(url)
    timeline = Timeline.for_scenario(scenario)
    try:
        with running_stack(
            database_url=url,
            ingest_key=ingest_key,
            default_variant=DEFAULT_VARIANT,
            log_dir=Path(".codelift/logs"),
        ) as (collector_url, gateway_url):
            prepare_live(url, scenario, timeline, sys.stdout)
            endpoints = Endpoints(gateway_url, serve_key, collector_url, ingest_key)
            result, fleet = asyncio.run(
                drive_fleet(
                    scenario,
                    timeline,
                    endpoints,
                    url,
                    sys.stdout,
                    concurrency=concurrency,
                    gate=False,
                )
            )
    except ServiceFailed as exc:
        raise CommandError(exc, code=FAILURE_EXIT) from None
    lost = result.events_sent - result.events_acknowledged
    typer.echo(
        f"{result.completions:,} completions, events sent {result.events_sent:,}, "
        f"acknowledged {result.events_acknowledged:,}, stored {result.events_stored:,}, lost {lost}"
    )
    if not check:
        return None
    engine = make_engine(url, pool_size=1)
    try:
        with engine.begin() as conn:
            # The gateway's latency is real, so only acceptance has a known truth here.
            only_acceptance = scenario.model_copy(update={"check_metrics": ("acceptance_rate",)})
            return run_check(conn, only_acceptance, fleet.truth, cuped=cuped)
    finally:
        engine.dispose()


def demo(
    reset: Annotated[
        bool, typer.Option(help="Delete an earlier run's data and simulate again.")
    ] = False,
    scenario_path: Annotated[
        Path, typer.Option("--scenario", help="The demo's scenario.")
    ] = DEMO_SCENARIO,
    developers: Annotated[int | None, typer.Option(help="Override the fleet's size.")] = None,
    days: Annotated[float | None, typer.Option(help="Override the simulated days.")] = None,
    serve: Annotated[
        bool, typer.Option(help="Keep the services and dashboard up until Ctrl-C.")
    ] = True,
    concurrency: Annotated[int, typer.Option(help="Completion requests in flight.")] = 8,
    dashboard_port: Annotated[int, typer.Option(help="Port of the dashboard.")] = 8501,
) -> None:
    """The whole platform on this machine: services, a fleet through a gated rollout, results."""
    from core.settings import get_database_settings
    from dashboard.launch import DashboardFailed
    from simulator.demo import DemoOptions, run_demo
    from simulator.stack import ServiceFailed

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _interrupt_on_signals()
    scenario = _scenario(scenario_path, developers, days)
    settings = get_database_settings()
    options = DemoOptions(
        scenario=scenario,
        reset=reset,
        serve=serve,
        concurrency=concurrency,
        dashboard_port=dashboard_port,
        log_dir=settings.data_dir / "logs",
    )
    try:
        with configured_database_url(settings) as url:
            run_demo(url, options)
    except (ServiceFailed, DashboardFailed) as exc:
        raise CommandError(exc, code=FAILURE_EXIT) from None
    except KeyboardInterrupt:
        typer.echo("\nstopped", err=True)
        raise typer.Exit(code=130) from None
