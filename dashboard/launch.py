"""Start the dashboard as a ``streamlit run`` subprocess and wait until it answers.

For the CLI (``codelift dashboard``), the demo and the browser test. The database URL and the
passwords travel in the child's environment, never on its command line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

from core.http_service import wait_until_healthy

SCRIPT = Path(__file__).with_name("streamlit_app.py")
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


@dataclasses.dataclass
class DashboardProcess:
    """A running dashboard: its process and the URL it serves."""

    process: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        """Terminate the server (killed if it does not stop in time)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)


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
) -> DashboardProcess:
    """Start the dashboard on ``host:port`` (0: a free port); return once it is healthy."""
    port = port or free_port(host)
    child_env = {**os.environ, **(env or {}), "CODELIFT_DATABASE_URL": database_url}
    # The project root, so `dashboard` imports in the child whatever its working directory.
    root = str(SCRIPT.parent.parent)
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (root, child_env.get("PYTHONPATH", "")) if p
    )
    # Quiet: the server's output goes to a file, read back if it fails to start.
    log = tempfile.TemporaryFile() if quiet else None
    process = subprocess.Popen(streamlit_command(host, port), env=child_env, stdout=log, stderr=log)
    url = f"http://{host}:{port}"
    running = DashboardProcess(process=process, url=url)
    try:
        _wait_healthy(running)
    except (RuntimeError, TimeoutError) as exc:
        running.stop()
        raise RuntimeError(f"{exc}; its output ends with:\n{_tail(log)}") from None
    except BaseException:
        running.stop()
        raise
    finally:
        # The child keeps its own descriptor; Streamlit says little once it is up.
        if log is not None:
            log.close()
    return running


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
