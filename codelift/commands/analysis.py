"""``codelift analyze`` and ``codelift gate``: analysis and rollout gates from a terminal."""

from __future__ import annotations

import enum
import getpass
import json
import logging
import time
from typing import TYPE_CHECKING, Annotated

import typer

from core.cli_support import CommandError, configured_database_url, configured_session
from experiments.analysis.options import DEFAULT_N_STAR, Correction

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from experiments.analysis.analyze import AnalysisReport
    from experiments.analysis.gates import GateDecision
    from experiments.definitions.models import Experiment

log = logging.getLogger(__name__)


class OutputFormat(enum.StrEnum):
    """How ``analyze`` prints."""

    TABLE = "table"
    JSON = "json"


class GroupBy(enum.StrEnum):
    """Drill-downs of ``analyze``."""

    LANGUAGE = "language"


class DataSource(enum.StrEnum):
    """Where ``analyze`` reads events from."""

    ROLLUPS = "rollups"
    RAW = "raw"


def _report(
    session: Session,
    experiment: Experiment,
    *,
    by_language: bool,
    source: DataSource,
    correction: Correction,
    alpha: float,
    cuped: bool,
    n_star: float,
    refresh: bool,
    capping: bool = True,
) -> AnalysisReport:
    from experiments.analysis.analyze import analyze_registered
    from experiments.analysis.rollups import refresh_rollups

    if refresh and source is DataSource.ROLLUPS:
        refresh_rollups(session.connection())
    return analyze_registered(
        session.connection(),
        experiment,
        by_language=by_language,
        source=source.value,
        alpha=alpha,
        correction=correction,
        n_star=n_star,
        cuped=cuped,
        capping=capping,
    )


def analyze(
    key: Annotated[str, typer.Argument(help="The experiment's key.")],
    output: Annotated[OutputFormat, typer.Option("--format", help="table or json.")] = (
        OutputFormat.TABLE
    ),
    by: Annotated[GroupBy | None, typer.Option("--by", help="Drill down by language.")] = None,
    source: Annotated[DataSource, typer.Option(help="rollups (fast) or raw events.")] = (
        DataSource.ROLLUPS
    ),
    correction: Annotated[
        Correction, typer.Option(help="Multiple-comparison correction across each family.")
    ] = Correction.HOLM,
    alpha: Annotated[float, typer.Option(min=0.0001, max=0.5, help="Error level.")] = 0.05,
    cuped: Annotated[bool, typer.Option(help="Adjust with the pre-period (CUPED).")] = True,
    n_star: Annotated[float, typer.Option(help="Sequential tuning N*.")] = DEFAULT_N_STAR,
    refresh: Annotated[bool, typer.Option(help="Bring rollups up to date first.")] = True,
    capping: Annotated[
        bool,
        typer.Option(help="Cap each user's contribution (off: gbstats' statistics exactly)."),
    ] = True,
) -> None:
    """Every metric per arm: estimate, lifts, CIs, p-values, sequential CI and p, SRM."""
    from experiments.analysis.report_table import render
    from experiments.definitions.registry import UnknownExperimentError, get_experiment

    with configured_session() as session:
        try:
            experiment = get_experiment(session, key)
        except UnknownExperimentError as exc:
            raise CommandError(exc) from None
        report = _report(
            session,
            experiment,
            by_language=by is GroupBy.LANGUAGE,
            source=source,
            correction=correction,
            alpha=alpha,
            cuped=cuped,
            n_star=n_star,
            refresh=refresh,
            capping=capping,
        )
        session.commit()
    if output is OutputFormat.JSON:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        typer.echo(render(report))


def _print(key: str, decision: GateDecision, applied: bool) -> None:
    target = f" → coverage {decision.next_coverage:g}" if decision.next_coverage is not None else ""
    state = " (applied)" if applied else ""
    typer.echo(f"{key}: {decision.decision.value}{target}{state}")
    for reason in decision.reasons:
        typer.echo(f"  - {reason}")
    if not decision.health:
        return
    # Every check, the failing and warning ones first: a passing list is short to scan.
    order = {"fail": 0, "warn": 1, "pass": 2}
    typer.echo("  health:")
    for check in sorted(decision.health, key=lambda c: order[c.status.value]):
        where = f" ({check.slice})" if check.slice else ""
        typer.echo(f"    {check.status.value:<4} {check.name}{where}: {check.reason}")


def gate(
    key: Annotated[str | None, typer.Argument(help="The experiment; omit with --all.")] = None,
    apply: Annotated[bool, typer.Option(help="Carry the decision out through the registry.")] = (
        False
    ),
    all_: Annotated[bool, typer.Option("--all", help="Every running experiment.")] = False,
    every: Annotated[
        float | None, typer.Option(help="Scheduler: repeat every N seconds until interrupted.")
    ] = None,
    actor: Annotated[str | None, typer.Option(help="Recorded as who decided.")] = None,
) -> None:
    """Evaluate the rollout gate: advance, hold, roll back or halt, with the reasons."""
    if (key is None) == (not all_):
        raise CommandError("give an experiment key or --all")
    from core.db.session import session_for
    from experiments.analysis.analyze import gate_analyzer
    from experiments.analysis.gate_runner import run_all_gates, run_gate
    from experiments.analysis.rollups import refresh_rollups
    from experiments.definitions.registry import UnknownExperimentError

    who = actor or f"gate:{getpass.getuser()}"
    with configured_database_url() as url:
        while True:
            with session_for(url) as session:
                refresh_rollups(session.connection())
                try:
                    if key is not None:
                        decisions = {
                            key: run_gate(
                                session, key=key, analyze=gate_analyzer, apply=apply, actor=who
                            )
                        }
                    else:
                        decisions = run_all_gates(
                            session, analyze=gate_analyzer, apply=apply, actor=who
                        )
                except UnknownExperimentError as exc:
                    raise CommandError(exc) from None
                session.commit()
            for name, decision in decisions.items():
                _print(name, decision, apply and decision.decision.value != "hold")
            if every is None:
                return
            time.sleep(every)
