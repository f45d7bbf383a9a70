"""An embedded PostgreSQL (pgserver) for machines where no DATABASE_URL is set.

pgserver ships PostgreSQL 16 binaries in its wheel and listens on a Unix socket only. Run as
root it creates a system user and opens o+rx on the data folder's parents, which is why the
data folder is the project's own (``.codelift/`` by default), never a shared system path.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

from codelift.settings import DatabaseSettings

log = logging.getLogger(__name__)
# pgserver logs every pg_ctl call with its full output at INFO; its warnings are what matter.
logging.getLogger("pgserver").setLevel(logging.WARNING)

EMBEDDED_DATABASE = "codelift"


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Start (or join) the embedded server in ``data_dir/postgres``; stop it on exit."""
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (root shells, CI) and
        # falls back to /tmp, which is fine for pgserver's lock file.
        warnings.simplefilter("ignore")
        import pgserver

    pgdata = (data_dir / "postgres").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode="stop": the server stops when the last process using it calls cleanup(),
    # and its data stays for the next run.
    server = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
    try:
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DATABASE}';")
        if "(1 row)" not in exists:
            server.psql(f"CREATE DATABASE {EMBEDDED_DATABASE};")
        uri: str = server.get_uri(EMBEDDED_DATABASE)
        log.info("embedded PostgreSQL running in %s", pgdata)
        yield uri
    finally:
        server.cleanup()


@contextlib.contextmanager
def database_url(settings: DatabaseSettings) -> Iterator[str]:
    """The configured database URL, or an embedded server's for as long as the block runs."""
    if settings.database_url:
        yield settings.database_url
        return
    with embedded_postgres(settings.data_dir) as url:
        yield url
