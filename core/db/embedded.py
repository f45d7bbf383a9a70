"""An embedded PostgreSQL (pgserver) for machines where no DATABASE_URL is set.

pgserver ships PostgreSQL 16 binaries in its wheel and listens on a Unix socket only. Run as
root it creates a system user and opens o+rx on the data folder's parents, which is why the
data folder is the project's own (``.codelift/`` by default), never a shared system path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

from core.settings import DatabaseSettings

log = logging.getLogger(__name__)
# pgserver logs every pg_ctl call with its full output at INFO; its warnings are what matter.
logging.getLogger("pgserver").setLevel(logging.WARNING)

EMBEDDED_DATABASE = "codelift"
# Where pgserver lists the processes using the server; the last one to leave stops it.
HANDLE_LIST = ".handle_pids.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def forget_dead_handles(handle_list: Path) -> list[int]:
    """Drop the processes that died without leaving from pgserver's list; return those left.

    A run that was killed (SIGKILL, a crash) never removes its pid, and pgserver would then never
    see the last handle leave: the server would keep running after every later run.
    """
    if not handle_list.exists():
        return []
    pids = [int(pid) for pid in json.loads(handle_list.read_text())]
    alive = [pid for pid in pids if _alive(pid)]
    if alive != pids:
        log.info("forgetting dead embedded PostgreSQL handles %s", sorted(set(pids) - set(alive)))
        handle_list.write_text(json.dumps(alive))
    return alive


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
        forget_dead_handles(pgdata / HANDLE_LIST)
        server.cleanup()


@contextlib.contextmanager
def database_url(settings: DatabaseSettings) -> Iterator[str]:
    """The configured database URL, or an embedded server's for as long as the block runs."""
    if settings.database_url:
        yield settings.database_url
        return
    with embedded_postgres(settings.data_dir) as url:
        yield url
