"""``codelift plan KEY|FILE``: what an experiment's rollout plan can detect, from the pre-period.

Also ``warn_if_underpowered``, which ``experiments apply`` runs after applying a definition.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from core.cli_support import CommandError, configured_session

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from experiments.analysis.planning_results import ExperimentPlan, PlanRow
    from experiments.definitions.config import ExperimentConfig

DEFINITION_SUFFIXES = (".yaml", ".yml", ".toml")


class OutputFormat(enum.StrEnum):
    """How ``plan`` prints."""

    TABLE = "table"
    JSON = "json"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _days(days: float) -> str:
    return f"{days:.2f}".rstrip("0").rstrip(".")


def _count(users: float) -> str:
    # Fractions matter only below a handful of users (a tiny language's expected count).
    return f"{users:.1f}" if users < 10 else f"{users:,.0f}"


def _users(row: PlanRow) -> str:
    counts = {_count(users) for users in row.users_per_arm.values()}
    if len(counts) == 1:
        return counts.pop()
    return "/".join(_count(users) for users in row.users_per_arm.values())


def _mde(row: PlanRow) -> str:
    if row.mde is None:
        return row.code.value
    return f"{row.mde:.1%}" + ("*" if row.low_power else "")


def render(plan: ExperimentPlan) -> str:
    """The plan as a terminal table with its assumptions."""
    from experiments.analysis.planning_model import MAX_DAYS

    arms = ", ".join(f"{name} {weight:g}" for name, weight in plan.weights.items())
    lines = [
        f"plan for {plan.experiment}: arms {arms}; planned duration {_days(plan.duration_days)} d; "
        f"target MDE {plan.target_mde:.1%} at power {plan.power:g}",
    ]
    if plan.window is None:
        lines.append("pre-period: no data")
    else:
        first, last = plan.window
        span = (last - first).days + 1
        seen = ", ".join(f"{d} d {users:,.0f}" for d, users in plan.growth.items())
        lines += [
            f"pre-period: {first} to {last} ({span} d); unique targeted users within {seen}",
            f"exposed by the planned end: {plan.exposed_users:,.0f} users (all arms)",
        ]
    treatments = len(plan.weights) - 1
    family = f"{len(plan.primary_metrics)} primary metric(s) × {treatments} treatment arm(s)"
    levels = f"all-languages rows at {plan.overall_alpha:.2g} (÷ {family})"
    if plan.language_alpha is not None:
        levels += (
            f", language rows at {plan.language_alpha:.2g} (÷ {len(plan.languages)} "
            "language(s) more)"
        )
    lines.append(f"two-sided α {plan.alpha:g}, Bonferroni: {levels}")
    if plan.rows:
        header = (
            "metric",
            "language",
            "users/arm",
            "baseline",
            "sd/user",
            f"MDE @{_days(plan.duration_days)} d",
            f"days to {plan.target_mde:.1%}",
        )
        table: list[tuple[str, ...]] = [header]
        previous = None
        for row in plan.rows:
            table.append(
                (
                    row.metric if row.metric != previous else "",
                    row.language or "(all)",
                    _users(row),
                    _number(row.baseline),
                    _number(row.sd),
                    _mde(row),
                    str(row.days_to_target) if row.days_to_target else f"> {MAX_DAYS}",
                )
            )
            previous = row.metric
        widths = [max(len(cells[i]) for cells in table) for i in range(len(header))]
        lines.append("")
        for cells in table:
            # Names left-aligned, numbers right-aligned.
            lines.append(
                "  ".join(
                    cell.ljust(width) if i < 2 else cell.rjust(width)
                    for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
                ).rstrip()
            )
    warnings = plan.warnings() if plan.rows else []
    if warnings or plan.notes:
        lines.append("")
    if any(row.low_power for row in plan.rows):
        lines.append(
            f"*: under {plan.min_effective_users:g} effective users in an arm at the planned end: "
            "the analysis shows such a row but does not judge it"
        )
    lines += [f"warning: {line}" for line in warnings]
    lines += [f"note: {note}" for note in plan.notes]
    return "\n".join(lines)


def _target(session: Session, target: str) -> tuple[ExperimentConfig, dt.datetime | None]:
    from experiments.definitions.config import ConfigError, load_config
    from experiments.definitions.registry import UnknownExperimentError, config_of, get_experiment

    path = Path(target)
    if path.suffix.lower() in DEFINITION_SUFFIXES or path.is_file():
        try:
            return load_config(path), None
        except ConfigError as exc:
            raise CommandError(exc) from None
    try:
        experiment = get_experiment(session, target)
    except UnknownExperimentError as exc:
        raise CommandError(exc) from None
    return config_of(experiment), experiment.started_at


def plan(
    target: Annotated[
        str, typer.Argument(help="An experiment's key, or a .yaml/.yml/.toml definition file.")
    ],
    days: Annotated[
        int, typer.Option(min=1, max=365, help="Whole UTC days of pre-period to read.")
    ] = 28,
    alpha: Annotated[
        float, typer.Option(min=0.0001, max=0.5, help="Two-sided error level before correction.")
    ] = 0.05,
    mde: Annotated[
        float | None, typer.Option(min=0.0001, help="Target relative MDE (default: plan.mde).")
    ] = None,
    power: Annotated[
        float | None, typer.Option(min=0.5, max=0.999, help="Power (default: plan.power).")
    ] = None,
    duration: Annotated[
        str | None, typer.Option(help="Planned duration, e.g. 21d (default: the definition's).")
    ] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option("--metric", help="Plan this metric instead of the primary ones; repeatable."),
    ] = None,
    output: Annotated[OutputFormat, typer.Option("--format", help="table or json.")] = (
        OutputFormat.TABLE
    ),
    refresh: Annotated[bool, typer.Option(help="Bring rollups up to date first.")] = True,
) -> None:
    """MDE per metric and language at the rollout plan, and the days a target MDE needs."""
    from experiments.analysis.planning import plan_experiment
    from experiments.analysis.rollups import refresh_rollups
    from experiments.definitions.config import Plan
    from experiments.definitions.metrics_catalog import METRICS, canonical_metric

    duration_s = None
    if duration is not None:
        try:
            duration_s = Plan.model_validate({"duration_s": duration}).duration_s
        except ValueError as exc:
            raise CommandError(f"--duration: {duration!r} is not a duration, e.g. 21d") from exc
    metrics = None
    if metric:
        metrics = [canonical_metric(name) for name in metric]
        unknown = sorted(set(metrics) - set(METRICS))
        if unknown:
            raise CommandError(f"--metric: unknown {', '.join(unknown)}")
    with configured_session() as session:
        config, started_at = _target(session, target)
        if refresh:
            refresh_rollups(session.connection())
        result = plan_experiment(
            session.connection(),
            config,
            started_at=started_at,
            days=days,
            alpha=alpha,
            target_mde=mde,
            power=power,
            duration_s=duration_s,
            metrics=metrics,
        )
        session.commit()
    if output is OutputFormat.JSON:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        typer.echo(render(result))


def warn_if_underpowered(
    session: Session, config: ExperimentConfig, started_at: dt.datetime | None
) -> None:
    """After ``experiments apply``: a warning on stderr per primary metric the plan misses."""
    from experiments.analysis.planning import plan_experiment

    result = plan_experiment(session.connection(), config, started_at=started_at)
    if not result.planned_metrics:
        typer.echo(
            f"{config.key}: planning skipped: no primary metric has a per-user variance", err=True
        )
        return
    if result.window is None:
        typer.echo(f"{config.key}: planning skipped: no pre-period rollups", err=True)
        return
    for line in result.warnings():
        typer.echo(f"warning: {config.key}: {line}", err=True)
