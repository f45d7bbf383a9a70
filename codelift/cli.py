"""The ``codelift`` command line.

Only what the commands' signatures need is imported here (typer, the commands' modules, small
enums and defaults): each command imports the features it drives when it runs, so ``codelift
--help`` starts fast (``bench/cli_startup.py``). A command fails with ``core.cli_support``'s
``CommandError``: ``error: <message>`` on stderr, exit 2 for a user error.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
from typing import Annotated, Any

import typer

from codelift.commands.analysis import analyze as analyze_command
from codelift.commands.analysis import gate as gate_command
from codelift.commands.backtest import backtest as backtest_command
from codelift.commands.dashboard import dashboard as dashboard_command
from codelift.commands.experiments import app as experiments_app
from codelift.commands.feedback import app as feedback_app
from codelift.commands.plan import plan as plan_command
from codelift.commands.simulate import demo as demo_command
from codelift.commands.simulate import simulate as simulate_command
from core.auth.scopes import Scope
from core.cli_support import CommandError, command_app, configured_database_url, configured_session

app = command_app("CodeLift: telemetry and experiments for code assistants.")
db_app = command_app("Database schema and partitions.")
keys_app = command_app("API keys for the collector and the gateway.")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(experiments_app, name="experiments")
app.add_typer(feedback_app, name="feedback")
app.command("analyze")(analyze_command)
app.command("gate")(gate_command)
app.command("plan")(plan_command)
app.command("backtest")(backtest_command)
app.command("dashboard")(dashboard_command)
app.command("simulate")(simulate_command)


@functools.wraps(demo_command)
def _demo(*args: Any, **kwargs: Any) -> None:
    # The demo is a trial on the user's own machine: development unless they said otherwise
    # (every service defaults to production). Its services, children of this process, inherit it.
    os.environ.setdefault("CODELIFT_ENVIRONMENT", "development")
    demo_command(*args, **kwargs)


app.command("demo")(_demo)


def _setup_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Migrate the database to the newest schema and create the coming days' partitions."""
    from collector.partitions import maintain_for_settings
    from core.db.connection import libpq_conninfo
    from core.settings import get_database_settings
    from migrations.runner import current_revision, upgrade

    _setup_logging()
    settings = get_database_settings()
    with configured_database_url(settings) as url:
        upgrade(url, revision)
        plan = maintain_for_settings(libpq_conninfo(url), settings, today=_today(), drop_old=False)
        typer.echo(f"database at {current_revision(url)}; {len(plan.create)} partitions created")


@db_app.command("maintain")
def db_maintain() -> None:
    """Roll up new events, create partitions ahead and drop those past the retention period."""
    from collector.event_ids import prune_for_settings
    from collector.partitions import maintain_for_settings
    from core.db.connection import libpq_conninfo
    from core.db.session import session_for
    from core.settings import get_database_settings
    from experiments.analysis.rollups import refresh_rollups

    _setup_logging()
    settings = get_database_settings()
    with configured_database_url(settings) as url:
        # Analysis reads the rollups, so a running experiment keeps its whole history once
        # raw partitions go; rolling up first means no day is dropped before it is counted.
        with session_for(url) as session:
            refresh_rollups(session.connection())
            session.commit()
        plan = maintain_for_settings(libpq_conninfo(url), settings, today=_today())
        forgotten = prune_for_settings(
            libpq_conninfo(url),
            max_event_age_days=settings.max_event_age_days,
            now=dt.datetime.now(dt.UTC),
        )
    typer.echo(
        f"created {len(plan.create)} partitions, dropped {len(plan.drop)} "
        f"(retention {settings.retention_days} days); "
        f"forgot {forgotten} event ids past the {settings.max_event_age_days}-day window"
    )
    for table, day in plan.drop:
        typer.echo(f"  dropped {table} {day:%Y-%m-%d}")


@db_app.command("rollup")
def db_rollup(
    lookback_days: Annotated[
        int, typer.Option(help="Days before the last refresh to rewrite (late events).")
    ] = 2,
) -> None:
    """Bring the per-user daily metric rollups up to date (run it periodically, e.g. hourly)."""
    from experiments.analysis.rollups import refresh_rollups

    _setup_logging()
    with configured_session() as session:
        result = refresh_rollups(session.connection(), lookback_days=lookback_days)
        session.commit()
    if result.first_day is None:
        typer.echo("no events to roll up")
        return
    typer.echo(
        f"rolled up {result.first_day} to {result.last_day}: {result.daily_rows} daily rows, "
        f"{result.exposure_day_rows} exposure-day rows"
    )


@app.command("collector")
def collector(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[int | None, typer.Option(help="Processes; 0 = one per core.")] = None,
) -> None:
    """Serve the collector (POST /v1/events) until interrupted."""
    from codelift.services import SchemaOutOfDate, prepared_database
    from collector.config import get_settings
    from collector.server import serve
    from core.cli_support import FAILURE_EXIT
    from core.supervise import ChildFailed

    settings = get_settings()
    overrides = {
        k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v is not None
    }
    settings = settings.model_copy(update=overrides)
    _setup_logging(settings.log_level)
    try:
        with prepared_database(settings) as url:
            serve(settings.model_copy(update={"database_url": url}))
    except SchemaOutOfDate as exc:
        raise CommandError(exc) from None
    except ChildFailed as exc:
        raise CommandError(exc, code=FAILURE_EXIT) from None


@app.command("gateway")
def gateway(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Serve the OpenAI-compatible completion gateway until interrupted."""
    from codelift.services import SchemaOutOfDate, gateway_app
    from core.supervise import Supervisor
    from serving.gateway.config import get_settings
    from serving.gateway.server import serve

    settings = get_settings()
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = settings.model_copy(update=overrides)
    _setup_logging(settings.log_level)
    try:
        # uvicorn re-raises the stop signal once it has drained; the supervisor turns it into a
        # return, so the gateway's own shutdown (its event queue, the embedded database) runs.
        with gateway_app(settings) as app, Supervisor("gateway"):
            serve(app, settings.host, settings.port, log_level=settings.log_level)
    except SchemaOutOfDate as exc:
        raise CommandError(exc) from None


@app.command("vllm-command")
def vllm_command(
    key: Annotated[str, typer.Argument(help="Experiment key.")],
    adapter_dir: Annotated[
        str, typer.Option(help="Directory holding LoRA adapters, one folder per name.")
    ] = "adapters",
    lora: Annotated[
        list[str] | None, typer.Option("--lora", help="NAME=PATH of an adapter; repeatable.")
    ] = None,
    base_port: Annotated[int, typer.Option(help="Port of the first deployment.")] = 8000,
    max_lora_rank: Annotated[int, typer.Option(help="Largest LoRA rank to load.")] = 16,
    include_local: Annotated[
        bool, typer.Option(help="Also deploy arms whose backend is 'local'.")
    ] = False,
) -> None:
    """Print the `vllm serve` command lines that serve an experiment's arms."""
    from experiments.definitions.registry import UnknownExperimentError, config_of, get_experiment
    from serving.gateway.config import get_settings
    from serving.vllm_command import render

    paths: dict[str, str] = {}
    for item in lora or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise CommandError(f"--lora: expected NAME=PATH, got {item!r}")
        paths[name] = path
    settings = get_settings()
    with configured_session(settings) as session:
        try:
            config = config_of(get_experiment(session, key))
        except UnknownExperimentError as exc:
            raise CommandError(exc) from None
    typer.echo(
        render(
            config,
            settings.default_variant,
            adapter_dir=adapter_dir,
            adapter_paths=paths,
            base_port=base_port,
            max_lora_rank=max_lora_rank,
            include_local=include_local,
        ),
        nl=False,
    )


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who or what the key is for.")],
    scope: Annotated[
        list[Scope] | None, typer.Option("--scope", help="Repeat for several; default: ingest.")
    ] = None,
    user: Annotated[
        str | None,
        typer.Option(
            help="Bind the key to this developer: the gateway serves its requests as "
            "theirs (for IDE clients that send no user)."
        ),
    ] = None,
) -> None:
    """Create an API key and print it; it is shown this once and never stored."""
    from core.auth.keys import create_api_key

    scopes = scope or [Scope.INGEST]
    with configured_session() as session:
        try:
            key, secret = create_api_key(session, name=name, scopes=scopes, user_id=user)
        except ValueError as exc:
            raise CommandError(exc) from None
        session.commit()
        owner = f", user: {key.user_id}" if key.user_id else ""
        typer.echo(
            f"created key {key.id} ({key.name}, scopes: {', '.join(key.scopes)}{owner})", err=True
        )
        typer.echo(secret)


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (never their secrets)."""
    from core.auth.keys import list_api_keys

    with configured_session() as session:
        for key in list_api_keys(session):
            state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
            owner = f"  user {key.user_id}" if key.user_id else ""
            typer.echo(
                f"{key.id:>5}  {key.prefix}…  {key.name:<30} {','.join(key.scopes):<20} {state}"
                f"{owner}"
            )


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[int, typer.Argument(help="The key's id (see `keys list`).")],
) -> None:
    """Revoke an API key; collectors stop accepting it within seconds."""
    from core.auth.keys import UnknownApiKeyError, revoke_api_key

    with configured_session() as session:
        try:
            key = revoke_api_key(session, key_id=key_id)
        except UnknownApiKeyError as exc:
            raise CommandError(exc) from None
        session.commit()
        typer.echo(f"revoked key {key.id} ({key.name})")
