"""``codelift dashboard``: serve the dashboard until SIGTERM or SIGINT (exit 0); exit 1 if it
fails to start or stops on its own."""

from __future__ import annotations

from typing import Annotated

import typer

from core.cli_support import FAILURE_EXIT, CommandError, configured_database_url


def dashboard(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="PostgreSQL URL (default: CODELIFT_DATABASE_URL).")
    ] = None,
) -> None:
    """Serve the Streamlit dashboard (overview, experiments, feedback, serving)."""
    from dashboard.launch import DashboardFailed, serve_dashboard
    from dashboard.settings import get_dashboard_settings
    from migrations.runner import upgrade

    settings = get_dashboard_settings()
    if database_url:
        settings = settings.model_copy(update={"database_url": database_url})
    with configured_database_url(settings) as url:
        if not settings.database_url:
            # The embedded database is this machine's own: keep it at the newest schema.
            upgrade(url)
        try:
            outcome = serve_dashboard(
                database_url=url,
                host=host or settings.host,
                port=port if port is not None else settings.port,
                announce=lambda served: typer.echo(f"dashboard at {served}", err=True),
            )
        except DashboardFailed as exc:
            raise CommandError(exc, code=FAILURE_EXIT) from None
    if outcome.failure is not None:
        raise CommandError(f"the dashboard stopped: {outcome.failure}", code=FAILURE_EXIT)
