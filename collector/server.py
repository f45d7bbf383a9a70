"""Running the collector: one or more uvicorn processes, each with its own SO_REUSEPORT socket.

``uvicorn --workers N`` shares one listening socket, and the kernel then piles keep-alive
connections onto whichever worker accepts first. With a socket per process and SO_REUSEPORT,
the kernel spreads new connections across the processes instead.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile

import uvicorn

from collector.config import CollectorSettings
from core.http_service import tune_gc
from core.supervise import Policy, Supervisor, python_process

log = logging.getLogger(__name__)


def bind_reuseport(host: str, port: int) -> socket.socket:
    """A listening socket that other processes may bind to the same address too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _serve_one(settings: CollectorSettings, sock: socket.socket | None = None) -> None:
    from collector.main import create_app, http_limits
    from core.http_guard import guarded_protocol

    if sock is None:
        sock = bind_reuseport(settings.host, settings.port)
    config = uvicorn.Config(
        create_app(settings),
        log_level=settings.log_level,
        access_log=False,
        # One HTTP/1.1 keep-alive connection per IDE is the normal case.
        timeout_keep_alive=30,
        loop="auto",
        # httptools, with bounds on each request's head that it lacks itself.
        http=guarded_protocol(http_limits(settings)),
    )
    tune_gc()
    uvicorn.Server(config).run(sockets=[sock])


def serve(settings: CollectorSettings) -> None:
    """Serve until SIGINT/SIGTERM; blocks. ``settings.database_url`` must be resolved.

    Several workers run under a supervisor (``core.supervise``): one that dies is restarted
    with back-off, and :class:`~core.supervise.ChildFailed` is raised once one keeps failing.
    """
    workers = settings.workers or os.cpu_count() or 1
    # Bind once here so a port taken by something else fails fast, and port 0 resolves to one
    # real port that every worker then shares.
    first = bind_reuseport(settings.host, settings.port)
    port = first.getsockname()[1]
    settings = settings.model_copy(update={"port": port})
    log.info(
        "collector listening on http://%s:%d with %d process(es)", settings.host, port, workers
    )
    if workers == 1:
        # No children; uvicorn re-raises the stop signal once it has drained, and the
        # supervisor turns it into a return, so the caller's context managers still run.
        with Supervisor("collector"):
            _serve_one(settings, first)
        return
    metrics_dir = tempfile.mkdtemp(prefix="codelift-metrics-")
    # prometheus_client picks its storage when imported, so the variable must be set before the
    # worker processes start.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    first.close()
    try:
        with Supervisor("collector", Policy(restart=True)) as supervisor:
            for i in range(workers):
                name = f"collector-{i}"
                supervisor.start(name, python_process(_serve_one, settings, name=name))
            supervisor.wait()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if supervisor.outcome is not None:
        supervisor.outcome.raise_for_failure()
