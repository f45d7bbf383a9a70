"""Process-level helpers shared by the HTTP services (collector and gateway)."""

from __future__ import annotations

import contextlib
import gc
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import uvicorn
from starlette.types import ASGIApp

from core.http_guard import HttpLimits, guarded_protocol

STARTUP_TIMEOUT_S = 60.0
SHUTDOWN_TIMEOUT_S = 20.0


def tune_gc() -> None:
    """Fewer garbage collections on a service's hot path.

    A request makes hundreds to a thousand short-lived objects without cycles; with the default
    gen-0 threshold (700 allocations) collections came every few requests (a third of the
    collector's parsing time) and full ones, over the long-lived app objects, cost tens of
    milliseconds at the gateway's p99. Objects alive at start-up are frozen out of collection.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def uvicorn_config(
    app: ASGIApp, *, log_level: str, limits: HttpLimits | None = None
) -> uvicorn.Config:
    """The uvicorn settings both services use (no access log, no websockets), with ``limits``
    on every request's head (``HttpLimits()`` unless given)."""
    return uvicorn.Config(
        app,
        log_config=None,
        log_level=log_level,
        access_log=False,
        ws="none",
        lifespan="on",
        timeout_graceful_shutdown=5,
        http=guarded_protocol(limits or HttpLimits()),
    )


@contextlib.contextmanager
def running_in_thread(
    app: ASGIApp, *, name: str, log_level: str = "warning", limits: HttpLimits | None = None
) -> Iterator[str]:
    """Serve ``app`` from a thread on a free loopback port; yield its base URL.

    For tests and benchmarks: every wait has a deadline, and the server is stopped on exit.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, log_level=log_level, limits=limits))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"{name}-{port}", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the {name} stopped during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {name} did not start in {STARTUP_TIMEOUT_S} s")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(SHUTDOWN_TIMEOUT_S)
        sock.close()
        if thread.is_alive():
            raise RuntimeError(f"the {name} did not stop in {SHUTDOWN_TIMEOUT_S} s")


def wait_until_healthy(
    process: subprocess.Popen[bytes], url: str, *, timeout_s: float, poll_s: float = 0.2
) -> str | None:
    """Poll ``url`` until it answers 200 while ``process`` runs.

    Returns None once healthy, else why it never was (the process exited, or the time ran
    out), for the caller to raise with whatever it knows (its log's tail).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            return f"exited with code {process.returncode}"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return None
        if time.monotonic() > deadline:
            return f"not healthy after {timeout_s:g} s"
        time.sleep(poll_s)
