"""Running the gateway: in the foreground (the CLI) or in a thread (tests and benchmarks)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from core.http_service import running_in_thread, tune_gc, uvicorn_config


def serve(app: FastAPI, host: str, port: int, *, log_level: str = "info") -> None:
    """Serve ``app`` until interrupted."""
    tune_gc()
    config = uvicorn_config(app, log_level=log_level)
    config.host, config.port = host, port
    uvicorn.Server(config).run()


@contextlib.contextmanager
def running(app: FastAPI, *, log_level: str = "warning") -> Iterator[str]:
    """Serve ``app`` from a thread on a free loopback port; yield its base URL."""
    with running_in_thread(app, name="gateway", log_level=log_level) as url:
        yield url
