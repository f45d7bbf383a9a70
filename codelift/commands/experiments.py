"""``codelift experiments …``: define, list, show, start, pause, ramp and stop experiments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from core.cli_support import Actor, CommandError, actor_name, command_app, configured_session
from experiments.definitions.status import Status

app = command_app("The experiment registry.")

Reason = Annotated[str | None, typer.Option("--reason", help="Why, for the audit log.")]
Key = Annotated[str, typer.Argument(help="The experiment's key.")]


@app.command("apply")
def apply(
    path: Annotated[Path, typer.Argument(help="A .yaml, .yml or .toml definition.", exists=True)],
    actor: Actor = None,
    plan: Annotated[
        bool, typer.Option(help="Check the plan against the pre-period data after applying.")
    ] = True,
) -> None:
    """Create an experiment from a definition file, or update it to match the file; warns when
    the pre-period says its plan cannot reach the configured power."""
    from sqlalchemy.exc import SQLAlchemyError

    from codelift.commands.plan import warn_if_underpowered
    from experiments.definitions.config import ConfigError, load_config
    from experiments.definitions.registry import RegistryError, apply_definition

    try:
        config = load_config(path)
        with configured_session() as session:
            result = apply_definition(session, config=config, actor=actor_name(actor))
            session.commit()
            experiment = result.experiment
            if result.created:
                typer.echo(
                    f"created {experiment.key} "
                    f"({experiment.status}, coverage {experiment.coverage:g})"
                )
            elif result.changed:
                typer.echo(f"updated {experiment.key}: {', '.join(result.changed)}")
            else:
                typer.echo(f"{experiment.key} unchanged")
            # After the commit: the plan only warns (on stderr), it never undoes an apply, and a
            # database that fails now does not make a stored change look failed.
            if plan:
                try:
                    warn_if_underpowered(session, config, experiment.started_at)
                except SQLAlchemyError as exc:
                    typer.echo(
                        f"planning skipped: the database failed ({exc.__class__.__name__})",
                        err=True,
                    )
    except (ConfigError, RegistryError) as exc:
        raise CommandError(exc) from None


@app.command("list")
def list_(
    status: Annotated[
        Status | None, typer.Option(help="Only experiments with this status.")
    ] = None,
) -> None:
    """List experiments with their status, layer, coverage and arms."""
    from experiments.definitions.registry import list_experiments

    with configured_session() as session:
        experiments = list_experiments(session, status=status)
        if not experiments:
            typer.echo("no experiments")
        for experiment in experiments:
            arms = ", ".join(f"{arm.name} {arm.weight:g}" for arm in experiment.arms)
            typer.echo(
                f"{experiment.key:<32} {experiment.status:<8} layer={experiment.layer:<16} "
                f"coverage={experiment.coverage:<6g} arms: {arms}"
            )


@app.command("show")
def show(
    key: Key,
    history: Annotated[int, typer.Option(help="How many audit entries to print.")] = 10,
) -> None:
    """Print an experiment's definition (as JSON) and its latest changes."""
    from experiments.definitions.registry import (
        UnknownExperimentError,
        audit_log,
        config_of,
        get_experiment,
    )

    with configured_session() as session:
        try:
            experiment = get_experiment(session, key)
        except UnknownExperimentError as exc:
            raise CommandError(exc) from None
        typer.echo(json.dumps(config_of(experiment).model_dump(mode="json"), indent=2))
        typer.echo(
            f"created {experiment.created_at:%Y-%m-%d %H:%M}, "
            f"updated {experiment.updated_at:%Y-%m-%d %H:%M}"
        )
        for entry in audit_log(session, key=key, limit=history):
            reason = f" ({entry.reason})" if entry.reason else ""
            typer.echo(
                f"  {entry.at:%Y-%m-%d %H:%M:%S}  {entry.action:<8} by {entry.actor}{reason}"
            )


def _status_command(status: Status, verb: str) -> None:
    @app.command(verb, help=f"Set an experiment's status to {status.value}.")
    def command(key: Key, actor: Actor = None, reason: Reason = None) -> None:
        from experiments.definitions.config import ConfigError
        from experiments.definitions.registry import (
            RegistryError,
            UnknownExperimentError,
            set_status,
        )

        with configured_session() as session:
            try:
                experiment = set_status(
                    session, key=key, status=status, actor=actor_name(actor), reason=reason
                )
            except (ConfigError, RegistryError, UnknownExperimentError) as exc:
                raise CommandError(exc) from None
            session.commit()
            typer.echo(f"{experiment.key} is {experiment.status}")


_status_command(Status.RUNNING, "start")
_status_command(Status.PAUSED, "pause")
_status_command(Status.STOPPED, "stop")
_status_command(Status.SHIPPED, "ship")


@app.command("ramp")
def ramp_(
    key: Key,
    coverage: Annotated[float, typer.Option(help="Share of targeted traffic, 0 to 1.")],
    actor: Actor = None,
    reason: Reason = None,
) -> None:
    """Set an experiment's coverage; users already in an arm stay in it."""
    from experiments.definitions.registry import RegistryError, UnknownExperimentError, ramp

    with configured_session() as session:
        try:
            experiment = ramp(
                session, key=key, coverage=coverage, actor=actor_name(actor), reason=reason
            )
        except (RegistryError, UnknownExperimentError) as exc:
            raise CommandError(exc) from None
        session.commit()
        typer.echo(f"{experiment.key} coverage {experiment.coverage:g}")
