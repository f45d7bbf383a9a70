"""The collector and the gateway as child processes of the demo (and of bench/e2e.py).

Each runs its own ``codelift`` command in its own process, as in production, so the simulator,
the collector, the gateway's model and PostgreSQL share the cores the way they would. Each is
started by :func:`core.supervise.spawn_command`: in a process group of its own, and (on Linux)
dying with the demo, SIGKILL included. They are stopped in reverse order (the gateway flushes
its events to the collector first) with SIGTERM, then SIGKILL after a deadline.

A service that exits while the stack is in use ends the block with :class:`ServiceFailed`: from
the main thread, SIGCHLD interrupts whatever the block is doing (an HTTP call, a sleep); the
end of the block checks again in any case.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from core.http_service import wait_until_healthy
from core.supervise import describe_exit, spawn_command, stop_processes
from experiments.variants import Variant

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0


class ServiceFailed(RuntimeError):
    """A child service exited or did not become ready; the message has its log's tail."""


# A BaseException, as KeyboardInterrupt: no ``except Exception`` in the block (the fleet's, a
# driver's) may swallow it and carry on with a service gone.
class _ServiceExited(BaseException):
    """A service exited in the stack's block; :func:`running_stack` raises ServiceFailed."""


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclasses.dataclass(frozen=True)
class _Service:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path


class _Watch:
    """Notices a service that exits before the stack stops it."""

    def __init__(self) -> None:
        self._services: list[_Service] = []
        self.failure: str | None = None
        self._watching = True
        self._raised = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> _Watch:
        # Signal handlers belong to the main thread; elsewhere only the end of the block checks.
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGCHLD, self._on_child)
            self._installed = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._watching = False
        if self._installed:
            signal.signal(signal.SIGCHLD, self._previous)
            self._installed = False

    def add(self, name: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
        """Watch ``process`` from now until :meth:`close`."""
        self._services.append(_Service(name, process, log_path))

    def close(self) -> None:
        """Stop watching, after a last look: the services exit on purpose from now on."""
        # First, so that a SIGCHLD from here on never interrupts their stopping.
        watching, self._watching = self._watching, False
        if watching:
            self._look()

    def _look(self) -> None:
        for service in self._services:
            code = service.process.poll()
            if code is not None and self.failure is None:
                self.failure = (
                    f"the {service.name} (pid {service.process.pid}) exited with "
                    f"{describe_exit(code)}:\n{_tail(service.log_path)}"
                )

    def _on_child(self, signum: int, frame: FrameType | None) -> None:
        if callable(self._previous):
            self._previous(signum, frame)
        # Any child's exit lands here (the dashboard's, pg_ctl's): only ours end the block.
        if not self._watching or self._raised:
            return
        self._look()
        if self.failure is not None:
            self._raised = True
            raise _ServiceExited


@contextlib.contextmanager
def service(
    name: str,
    args: list[str],
    *,
    env: Mapping[str, str],
    ready_url: str,
    log_dir: Path,
    watch: _Watch | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``codelift <args>`` until the block ends; wait until ``ready_url`` answers 200."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = spawn_command(
            [sys.executable, "-m", "codelift", *args],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            if watch is not None:
                watch.add(name, process, log_path)
            _wait_ready(name, process, ready_url, log_path)
            yield process
        finally:
            try:
                if watch is not None:
                    watch.close()
            finally:
                stop_processes([process], grace_s=STOP_TIMEOUT_S)


def _wait_ready(name: str, process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    failure = wait_until_healthy(process, url, timeout_s=READY_TIMEOUT_S)
    if failure is not None:
        raise ServiceFailed(f"the {name} {failure}:\n{_tail(log_path)}")


def collector_args(port: int) -> list[str]:
    """``codelift collector`` on ``port``, one process."""
    return ["collector", "--port", str(port), "--workers", "1"]


def gateway_env(
    *,
    database_url: str,
    collector_url: str,
    ingest_key: str,
    default_variant: Variant,
) -> dict[str, str]:
    """The gateway's settings for simulated developers: simulated time, no rate limit."""
    return {
        "CODELIFT_DATABASE_URL": database_url,
        "CODELIFT_GATEWAY_COLLECTOR_URL": collector_url,
        "CODELIFT_GATEWAY_INGEST_KEY": ingest_key,
        "CODELIFT_GATEWAY_TRUST_CLIENT_TIME": "true",
        "CODELIFT_GATEWAY_DEFAULT_VARIANT": json.dumps(default_variant.model_dump(mode="json")),
        # One key serves the whole fleet: the per-key limit would throttle the simulation.
        "CODELIFT_GATEWAY_RATE_LIMIT_PER_S": "100000",
        "CODELIFT_GATEWAY_RATE_LIMIT_BURST": "100000",
        "CODELIFT_GATEWAY_EVENT_FLUSH_INTERVAL_S": "0.1",
        "CODELIFT_GATEWAY_EVENT_BATCH_SIZE": "200",
        "CODELIFT_GATEWAY_LOG_LEVEL": "warning",
    }


@contextlib.contextmanager
def running_stack(
    *,
    database_url: str,
    ingest_key: str,
    default_variant: Variant,
    log_dir: Path,
    collector_port: int | None = None,
    gateway_port: int | None = None,
) -> Iterator[tuple[str, str]]:
    """The collector and the gateway (local engine) on loopback; yields their base URLs."""
    cport = collector_port or free_port()
    gport = gateway_port or free_port()
    collector_url = f"http://127.0.0.1:{cport}"
    gateway_url = f"http://127.0.0.1:{gport}"
    watch = _Watch()
    try:
        with (
            watch,
            service(
                "collector",
                collector_args(cport),
                env={
                    "CODELIFT_DATABASE_URL": database_url,
                    "CODELIFT_COLLECTOR_LOG_LEVEL": "warning",
                },
                ready_url=f"{collector_url}/readyz",
                log_dir=log_dir,
                watch=watch,
            ),
            service(
                "gateway",
                ["gateway", "--port", str(gport)],
                env=gateway_env(
                    database_url=database_url,
                    collector_url=collector_url,
                    ingest_key=ingest_key,
                    default_variant=default_variant,
                ),
                ready_url=f"{gateway_url}/healthz",
                log_dir=log_dir,
                watch=watch,
            ),
        ):
            yield collector_url, gateway_url
    except BaseException as exc:
        # Whatever the block raised after a service died (its own exception, an HTTP error, a
        # Ctrl-C), the death is the reason to report.
        if watch.failure is None or isinstance(exc, GeneratorExit):
            raise
        raise ServiceFailed(watch.failure) from (None if isinstance(exc, _ServiceExited) else exc)
    if watch.failure is not None:
        raise ServiceFailed(watch.failure)
