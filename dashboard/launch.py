"""Start the dashboard as a ``streamlit run`` subprocess and wait until it answers.

For the CLI (``codelift dashboard``, :func:`serve_dashboard`), the demo and the browser test.
The database URL and the passwords travel in the child's environment, never on its command
line. Streamlit runs in its own process group and (on Linux) dies with its launcher; a port
that something already serves is refused before Streamlit starts, since the health check would
otherwise be answered by that other server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO

from core.http_service import wait_until_healthy
from core.supervise import Outcome, Policy, Supervisor, spawn_command, stop_processes

SCRIPT = Path(__file__).with_name("streamlit_app.py")
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


class DashboardFailed(RuntimeError):
    """The dashboard did not start (or stopped serving); the message says why."""


@dataclasses.dataclass
class DashboardProcess:
    """A running dashboard: its process and the URL it serves."""

    process: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        """Terminate the server's process group (killed if it does not stop in time)."""
        stop_processes([self.process], grace_s=STOP_TIMEOUT_S)


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def streamlit_command(host: str, port: int) -> list[str]:
    """The ``streamlit run`` command line of the dashboard."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(SCRIPT),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--global.developmentMode",
        "false",
        "--theme.base",
        "light",
        "--client.toolbarMode",
        "minimal",
    ]


def start_dashboard(
    *,
    database_url: str,
    host: str = "127.0.0.1",
    port: int = 0,
    env: Mapping[str, str] | None = None,
    quiet: bool = True,
    supervisor: Supervisor | None = None,
) -> DashboardProcess:
    """Start the dashboard on ``host:port`` (0: a free port); return once it is healthy.

    Raises :class:`DashboardFailed` if the port is taken or the server does not come up.
    """
    port = port or free_port(host)
    _refuse_taken_port(host, port)
    child_env = {**os.environ, **(env or {}), "CODELIFT_DATABASE_URL": database_url}
    # The project root, so `dashboard` imports in the child whatever its working directory.
    root = str(SCRIPT.parent.parent)
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (root, child_env.get("PYTHONPATH", "")) if p
    )
    # Quiet: the server's output goes to a file, read back if it fails to start.
    log = tempfile.TemporaryFile() if quiet else None

    def launch() -> subprocess.Popen[bytes]:
        return spawn_command(streamlit_command(host, port), env=child_env, stdout=log, stderr=log)

    try:
        process = supervisor.start("streamlit", launch) if supervisor else launch()
    except BaseException:
        if log is not None:
            log.close()
        raise
    url = f"http://{host}:{port}"
    running = DashboardProcess(process=process, url=url)
    try:
        _wait_healthy(running)
    except (RuntimeError, TimeoutError) as exc:
        running.stop()
        raise DashboardFailed(f"{exc}; its output ends with:\n{_tail(log)}") from None
    except BaseException:
        running.stop()
        raise
    finally:
        # The child keeps its own descriptor; Streamlit says little once it is up.
        if log is not None:
            log.close()
    return running


def serve_dashboard(
    *,
    database_url: str,
    host: str,
    port: int,
    announce: Callable[[str], None],
) -> Outcome:
    """Serve the dashboard until SIGTERM/SIGINT; ``announce`` gets its URL once it is healthy.

    Returns how serving ended (a signal, or Streamlit's own exit: a failure); raises
    :class:`DashboardFailed` if it never started. Streamlit is stopped in every case.
    """
    with Supervisor("dashboard", Policy(grace_s=STOP_TIMEOUT_S)) as supervisor:
        running = start_dashboard(
            database_url=database_url, host=host, port=port, quiet=False, supervisor=supervisor
        )
        announce(running.url)
        supervisor.wait()
    # Set by wait(), or by the supervisor's exit when a signal cut the start short.
    assert supervisor.outcome is not None
    return supervisor.outcome


def _refuse_taken_port(host: str, port: int) -> None:
    """Raise :class:`DashboardFailed` if something listens on ``host:port`` already."""
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror:
        return  # Streamlit says what is wrong with the address itself.
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            # As Streamlit's own socket: a port left in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise DashboardFailed(
                        f"port {port} on {host or 'every address'} is already in use "
                        "(another dashboard, or another service)"
                    ) from None
                # Any other error (an address no interface has): Streamlit reports it.


def _tail(log: IO[bytes] | None, size: int = 4000) -> str:
    if log is None:
        return "(printed above)"
    log.seek(0)
    return log.read()[-size:].decode(errors="replace")


def _wait_healthy(running: DashboardProcess) -> None:
    failure = wait_until_healthy(
        running.process, f"{running.url}/_stcore/health", timeout_s=STARTUP_TIMEOUT_S
    )
    if failure is not None:
        raise RuntimeError(f"the dashboard {failure}")


@contextlib.contextmanager
def running_dashboard(*, database_url: str, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """A dashboard on a free loopback port for the block; yields its URL."""
    running = start_dashboard(database_url=database_url, env=env)
    try:
        yield running.url
    finally:
        running.stop()
