"""Gateway parts on their own: settings, the rate limiter, the event logger, error mapping."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from core.auth.verify import AuthError
from core.ratelimit import RateLimiter
from experiments.variants import FimFamily
from serving.event_logger import EventLogger
from serving.gateway.config import GatewaySettings
from serving.gateway.errors import error_response, from_auth_error, rate_limited
from serving.gateway.protocol import CompletionRequest, language_of


def test_settings_read_nested_values_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "CODELIFT_GATEWAY_DEFAULT_VARIANT", '{"model": "qwen", "fim_template": "qwen2.5-coder"}'
    )
    monkeypatch.setenv("CODELIFT_GATEWAY_VLLM", '[{"url": "http://gpu:8000", "models": ["qwen"]}]')
    monkeypatch.setenv("CODELIFT_GATEWAY_LOCAL", '{"enabled": false}')
    monkeypatch.setenv("CODELIFT_GATEWAY_RATE_LIMIT_PER_S", "5")
    settings = GatewaySettings()
    assert settings.default_variant.fim_template is FimFamily.QWEN25_CODER
    assert settings.vllm[0].models == ("qwen",)
    assert not settings.local.enabled and settings.rate_limit_per_s == 5


def test_rate_limiter_refills_per_key() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=2, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(2)] == [0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(0.5)
    assert limiter.acquire("b") == 0.0
    now[0] = 0.5
    assert limiter.acquire("a") == 0.0
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(rate=0, burst=1)


def test_error_bodies_and_headers() -> None:
    response = error_response(rate_limited(1.2))
    assert response.status_code == 429 and response.headers["retry-after"] == "2"
    body = json.loads(bytes(response.body))
    assert body["error"]["type"] == "rate_limit_error"
    forbidden = from_auth_error(AuthError(403, "lacks the 'serve' scope"))
    assert forbidden.status == 403 and forbidden.type == "permission_error"


class Collector:
    """Answers the event logger's POSTs from a script of statuses, recording batches."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.batches: list[list[dict[str, object]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        events = json.loads(request.content)["events"]
        assert request.headers["authorization"] == "Bearer secret"
        status = self.statuses.pop(0) if self.statuses else 200
        if status != 200:
            return httpx.Response(status, json={"error": "nope"})
        self.batches.append(events)
        rejected = [{"index": 0, "field": "x", "reason": "bad"}] if events[0].get("bad") else []
        n = len(events)
        return httpx.Response(
            200, json={"received": n, "stored": n, "duplicates": 0, "rejected": rejected}
        )


def run_logger(collector: Collector, events: int, **options: object) -> EventLogger:
    async def go() -> EventLogger:
        logger = EventLogger(
            "http://collector",
            "secret",
            flush_interval_s=0.01,
            backoff_s=0.01,
            transport=httpx.MockTransport(collector),
            **options,  # type: ignore[arg-type]
        )
        await logger.start()
        for i in range(events):
            logger.offer({"n": i})
        assert await logger.flush(5)
        await logger.aclose()
        return logger

    return asyncio.run(go())


def test_events_are_sent_in_batches() -> None:
    collector = Collector([])
    logger = run_logger(collector, 25, batch_size=10)
    assert sum(len(b) for b in collector.batches) == 25
    assert max(len(b) for b in collector.batches) <= 10
    assert (logger.counts.sent, logger.counts.dropped) == (25, 0)


def test_failed_posts_are_retried_then_given_up() -> None:
    collector = Collector([503, 500])
    logger = run_logger(collector, 3, max_retries=3)
    assert logger.counts.sent == 3 and logger.counts.failed_posts == 2

    collector = Collector([503, 503, 503])
    drops: list[int] = []
    logger = run_logger(collector, 3, max_retries=2, on_drop=drops.append)
    assert logger.counts.dropped == 3 and drops == [3] and not collector.batches


def test_a_refused_batch_is_not_retried() -> None:
    collector = Collector([401, 200])
    logger = run_logger(collector, 2, max_retries=5)
    assert logger.counts.failed_posts == 0 and logger.counts.dropped == 2


def test_a_disabled_logger_takes_nothing() -> None:
    logger = EventLogger(None, None)
    assert not logger.enabled and logger.offer({"n": 1}) is False


@pytest.mark.parametrize(
    ("filepath", "language"),
    [
        ("src/app.py", "python"),
        ("C:\\code\\Main.JAVA", "java"),
        ("web/App.tsx", "typescriptreact"),
        ("Makefile", "unknown"),
        ("notes.txt", "unknown"),
        (None, "unknown"),
    ],
)
def test_language_from_the_file_extension(filepath: str | None, language: str) -> None:
    assert language_of(filepath) == language


def test_a_sent_language_wins_over_the_extension() -> None:
    request = CompletionRequest(prompt="x", user="u", language="Python", filepath="a.rs")
    assert request.language_name == "python"
    inferred = CompletionRequest(prompt="x", user="u", filepath="a.rs")
    assert inferred.language_name == "rust"
