"""The gateway assembled from its settings, one way for every caller.

``assembled_gateway`` is what the CLI serves, what backtests run in-process and what the demo's
child process runs: the backends the settings configure (or the caller's), with
``settings.experiments`` the assignment service and its exposure recorder started, and the app.
The database URL must be resolved already (the composition root starts an embedded database
and migrates it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path

from fastapi import FastAPI

from experiments.assignment.service import AssignmentService
from serving.backend import Backend
from serving.gateway.config import GatewaySettings

log = logging.getLogger(__name__)


def make_backends(settings: GatewaySettings) -> dict[str, Backend]:
    """The local engine (if configured) and a router over the configured vLLM servers."""
    backends: dict[str, Backend] = {}
    if settings.local.enabled:
        # torch is only imported when the local engine is wanted.
        from serving.local.engine import DEFAULT_CHECKPOINT, LocalEngine

        checkpoint = Path(settings.local.checkpoint) if settings.local.checkpoint else None
        backends["local"] = LocalEngine.load(
            checkpoint or DEFAULT_CHECKPOINT,
            adapter_paths=[Path(p) for p in settings.local.adapters],
        )
    if settings.vllm:
        from serving.vllm_backend import VllmBackend, VllmRouter

        backends["vllm"] = VllmRouter(
            [
                VllmBackend(
                    server.url,
                    models=server.models,
                    api_key=server.api_key,
                    timeout_s=server.timeout_s,
                    max_connections=server.max_connections,
                    chars_per_token=server.chars_per_token,
                )
                for server in settings.vllm
            ]
        )
    return backends


@contextlib.contextmanager
def assignment_service(settings: GatewaySettings, database_url: str) -> Iterator[AssignmentService]:
    """An assignment service reading the registry, with its exposure recorder, started."""
    from experiments.assignment.exposures import ExposureRecorder

    recorder = ExposureRecorder(
        database_url, max_event_age=dt.timedelta(days=settings.max_event_age_days)
    )
    service = AssignmentService(
        database_url,
        settings.default_variant,
        refresh_interval_s=settings.registry_refresh_s,
        exposure_recorder=recorder,
    )
    recorder.start()
    service.start()
    try:
        yield service
    finally:
        service.stop()
        recorder.stop()


@contextlib.contextmanager
def assembled_gateway(
    settings: GatewaySettings, *, backends: Mapping[str, Backend] | None = None
) -> Iterator[FastAPI]:
    """The gateway app for ``settings``, on ``backends`` or, by default, on those the settings
    configure; the assignment service (with ``settings.experiments``) is stopped when the block
    ends. Backends made here are closed with the app's lifespan; the caller's stay the caller's."""
    from serving.gateway.main import create_app

    with contextlib.ExitStack() as stack:
        assignment = None
        if settings.experiments:
            if not settings.database_url:
                raise ValueError("experiments need database_url (the registry lives there)")
            assignment = stack.enter_context(assignment_service(settings, settings.database_url))
        made_here = backends is None
        served = make_backends(settings) if backends is None else dict(backends)
        yield create_app(settings, served, assignment, close_backends=made_here)
