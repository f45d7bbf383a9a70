"""The collector and the gateway as child processes of the demo (and of bench/e2e.py).

Each runs its own ``codelift`` command in its own process, as in production, so the simulator,
the collector, the gateway's model and PostgreSQL share the cores the way they would. They
are stopped with SIGINT (uvicorn's graceful shutdown: the gateway flushes its event queue),
then SIGTERM, then SIGKILL, each after a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from core.http_service import wait_until_healthy
from experiments.variants import Variant

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0


class ServiceFailed(RuntimeError):
    """A child service exited or did not become ready; the message has its log's tail."""


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


@contextlib.contextmanager
def service(
    name: str,
    args: list[str],
    *,
    env: Mapping[str, str],
    ready_url: str,
    log_dir: Path,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``codelift <args>`` until the block ends; wait until ``ready_url`` answers 200."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "codelift", *args],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group: a Ctrl-C in the terminal reaches the demo only, which then
            # stops the services in order.
            start_new_session=True,
        )
        try:
            _wait_ready(name, process, ready_url, log_path)
            yield process
        finally:
            _stop(process)


def _wait_ready(name: str, process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    failure = wait_until_healthy(process, url, timeout_s=READY_TIMEOUT_S)
    if failure is not None:
        raise ServiceFailed(f"the {name} {failure}:\n{_tail(log_path)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_TIMEOUT_S)


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
        "CODELIFT_GATEWAY_EVENT_MAX_RETRIES": "10",
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
    with (
        service(
            "collector",
            collector_args(cport),
            env={"CODELIFT_DATABASE_URL": database_url, "CODELIFT_COLLECTOR_LOG_LEVEL": "warning"},
            ready_url=f"{collector_url}/readyz",
            log_dir=log_dir,
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
        ),
    ):
        yield collector_url, gateway_url
