"""Building the gateway's backends and assignment service from its settings (the CLI's job)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

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

    recorder = ExposureRecorder(database_url)
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
