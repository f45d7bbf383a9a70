"""The services as the composition root runs them: the database made ready, then each service's
own assembly (``collector.server.serve`` builds ``collector.main.create_app`` in every worker;
``serving.gateway.assembly.assembled_gateway`` builds the gateway).

The CLI commands, the demo's child processes (which are those commands) and the tests of the
commands all go through here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from core.db.embedded import database_url
from core.settings import DatabaseSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from serving.gateway.config import GatewaySettings


class SchemaOutOfDate(RuntimeError):
    """The configured database is not at the schema revision this code expects."""


@contextlib.contextmanager
def prepared_database(settings: DatabaseSettings) -> Iterator[str]:
    """The URL a service runs on: the embedded PostgreSQL, started and migrated to the newest
    schema (it is this machine's own), or the configured server, which must be migrated already
    (``codelift db upgrade``): a service never migrates a shared database by itself."""
    from migrations.runner import current_revision, head_revision, upgrade

    embedded = not settings.database_url
    with database_url(settings) as url:
        if embedded:
            upgrade(url)
        else:
            current, head = current_revision(url), head_revision(url)
            if current != head:
                raise SchemaOutOfDate(
                    f"database is at revision {current}, code expects {head}: "
                    "run `codelift db upgrade` first"
                )
        yield url


@contextlib.contextmanager
def gateway_app(settings: GatewaySettings) -> Iterator[FastAPI]:
    """The gateway for ``settings`` on a prepared database, with everything it starts."""
    from serving.gateway.assembly import assembled_gateway

    with (
        prepared_database(settings) as url,
        assembled_gateway(settings.model_copy(update={"database_url": url})) as app,
    ):
        yield app
