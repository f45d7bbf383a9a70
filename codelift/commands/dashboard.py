"""``codelift dashboard``: serve the dashboard until interrupted."""

from __future__ import annotations

from typing import Annotated

import typer

from core.cli_support import configured_database_url


def dashboard(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="PostgreSQL URL (default: CODELIFT_DATABASE_URL).")
    ] = None,
) -> None:
    """Serve the Streamlit dashboard (overview, experiments, feedback, serving)."""
    from dashboard.launch import start_dashboard
    from dashboard.settings import get_dashboard_settings
    from migrations.runner import upgrade

    settings = get_dashboard_settings()
    if database_url:
        settings = settings.model_copy(update={"database_url": database_url})
    with configured_database_url(settings) as url:
        if not settings.database_url:
            # The embedded database is this machine's own: keep it at the newest schema.
            upgrade(url)
        running = start_dashboard(
            database_url=url,
            host=host or settings.host,
            port=port if port is not None else settings.port,
            quiet=False,
        )
        typer.echo(f"dashboard at {running.url}", err=True)
        try:
            running.process.wait()
        except KeyboardInterrupt:
            pass
        finally:
            running.stop()
