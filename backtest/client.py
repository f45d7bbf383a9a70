"""Completions for masked spans through the gateway: a running one, or one started in-process.

Going through the gateway (never the backend directly) means a backtest sees what developers
would get: the arm's FIM template, token budget, decoding and post-processing, on vLLM arms too.
The arm is named with the request's ``variant`` field, which needs a key with the ``evaluate``
scope (the in-process gateway has auth off).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from backtest.masking import MaskedSpan
from experiments.variants import VariantOverrides
from serving.backend import Backend
from serving.gateway.config import GatewaySettings

DEFAULT_USER = "codelift-backtest"
DEFAULT_TIMEOUT_S = 120.0
# 429 (rate limit) and 503 (backend busy or down) are retried after the Retry-After they carry.
RETRIED_STATUSES = (429, 503)
MAX_RETRIES = 5


class GatewayRefused(Exception):
    """The gateway refused a request in a way every other request would share (bad key, bad
    variant, unknown model): the backtest stops and says why."""


@dataclasses.dataclass(frozen=True, slots=True)
class Completion:
    """What the gateway answered for one span: the text, the gateway-measured latency, or the
    error (a failed completion scores as an empty one)."""

    text: str
    latency_ms: float | None
    suggestion_id: str | None = None
    error: str | None = None


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        message = str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = response.text[:500]
    return f"HTTP {response.status_code}: {message}"


def _retry_after(response: httpx.Response, attempt: int) -> float:
    try:
        return max(0.05, float(response.headers.get("retry-after", "")))
    except ValueError:
        return min(5.0, 0.1 * 2.0**attempt)


class GatewayClient:
    """Sends each span to ``base_url``'s ``/v1/completions`` with a chosen variant."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        user: str = DEFAULT_USER,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s, transport=transport
        )
        self.user = user

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def body(self, span: MaskedSpan, variant: VariantOverrides) -> dict[str, Any]:
        """The request for ``span`` as ``variant`` (an IDE's automatic trigger)."""
        return {
            "model": "codelift",
            "prompt": span.prefix,
            "suffix": span.suffix,
            "user": self.user,
            "language": span.language,
            "filepath": span.path,
            "trigger": "auto",
            "variant": variant.as_dict(),
        }

    def complete(self, span: MaskedSpan, variant: VariantOverrides) -> Completion:
        """The completion of ``span`` by ``variant``; a backend failure is a value, a refusal
        that no retry fixes raises ``GatewayRefused``."""
        body = self.body(span, variant)
        for attempt in range(MAX_RETRIES + 1):
            started = time.perf_counter()
            try:
                response = self._http.post("/v1/completions", json=body)
            except httpx.TransportError as exc:
                return Completion("", None, error=f"{type(exc).__name__}: {exc}")
            elapsed_ms = (time.perf_counter() - started) * 1000
            if response.status_code in RETRIED_STATUSES and attempt < MAX_RETRIES:
                time.sleep(_retry_after(response, attempt))
                continue
            if 400 <= response.status_code < 500 and response.status_code != 429:
                raise GatewayRefused(_error_message(response))
            if response.status_code != 200:
                return Completion("", None, error=_error_message(response))
            answer = response.json()
            extra = answer.get("codelift") or {}
            return Completion(
                text=answer["choices"][0]["text"],
                # The gateway's own measurement, as the online latency guardrail uses.
                latency_ms=float(extra.get("latency_ms", elapsed_ms)),
                suggestion_id=answer.get("id"),
            )
        raise AssertionError("unreachable: the last attempt always returns")


def fitted_settings(settings: GatewaySettings) -> GatewaySettings:
    """Settings for an in-process gateway: auth, experiments and event logging off (the gateway
    itself cuts every arm's context budget to what the backend's context holds)."""
    return settings.model_copy(
        update={
            "require_auth": False,
            "experiments": False,
            "collector_url": None,
        }
    )


@contextlib.contextmanager
def in_process_gateway(
    settings: GatewaySettings, backends: Mapping[str, Backend] | None = None
) -> Iterator[str]:
    """A gateway in a thread on a free loopback port (by default on the backends ``settings``
    configure: the local engine); yields its base URL and closes the backends at the end."""
    from serving.gateway.assembly import assembled_gateway
    from serving.gateway.server import running

    with (
        assembled_gateway(fitted_settings(settings), backends=backends) as app,
        running(app) as url,
    ):
        yield url
