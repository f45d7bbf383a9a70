"""Gateway parts on their own: settings, the rate limiter, the event logger, error mapping."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.auth.verify import AuthError
from core.ratelimit import RateLimiter
from experiments.variants import FimFamily
from serving.event_logger import EventLogger
from serving.gateway.config import GatewaySettings
from serving.gateway.errors import error_response, from_auth_error, rate_limited
from serving.gateway.protocol import CompletionRequest


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
    """Answers the event logger's POSTs from a script of answers, recording what it stored.

    An answer is a status (200 stores every event not marked ``bad``), a ``(status, headers)``
    pair, an ``httpx.Response`` or an exception to raise.
    """

    def __init__(self, answers: list[object]) -> None:
        self.answers = answers
        self.batches: list[list[dict[str, object]]] = []
        self.posts = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.posts += 1
        events = json.loads(request.content)["events"]
        assert request.headers["authorization"] == "Bearer secret"
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        if status != 200:
            return httpx.Response(status, json={"error": "nope"}, headers=headers)
        self.batches.append(events)
        rejected = [
            {"index": i, "field": "x", "reason": "bad"}
            for i, e in enumerate(events)
            if e.get("bad")
        ]
        n = len(events)
        stored = n - len(rejected)
        return httpx.Response(
            200, json={"received": n, "stored": stored, "duplicates": 0, "rejected": rejected}
        )


def run_logger(
    collector: Collector, events: list[dict[str, object]], spool: Path, **options: Any
) -> tuple[EventLogger, list[float]]:
    """Offer ``events`` to a logger on ``collector``, wait until all are settled; the logger
    and the back-off waits it took (not slept: the test's clock is only the logger's)."""
    waits: list[float] = []

    async def no_sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0)

    async def go() -> EventLogger:
        logger = EventLogger(
            "http://collector",
            "secret",
            spool_root=spool,
            flush_interval_s=0.01,
            backoff_s=0.01,
            transport=httpx.MockTransport(collector),
            sleep=no_sleep,
            **options,
        )
        await logger.start()
        for event in events:
            logger.offer(event)
        assert await logger.flush(5)
        await logger.aclose()
        return logger

    return asyncio.run(go()), waits


def numbered(n: int, **fields: object) -> list[dict[str, object]]:
    return [{"n": i, **fields} for i in range(n)]


def test_events_are_sent_in_batches(tmp_path: Path) -> None:
    collector = Collector([])
    logger, _ = run_logger(collector, numbered(25), tmp_path, batch_size=10)
    assert sorted(e["n"] for b in collector.batches for e in b) == list(range(25))  # type: ignore[type-var]
    assert max(len(b) for b in collector.batches) <= 10
    assert (logger.counts.delivered, logger.counts.dropped) == (25, 0)
    # Everything delivered: the spool leaves nothing on disk.
    assert list(tmp_path.iterdir()) == []


def test_failed_posts_are_retried_until_the_collector_answers(tmp_path: Path) -> None:
    down = httpx.ConnectError("refused")
    collector = Collector([503, 500, down, down, down, down, down, down, 502])
    logger, waits = run_logger(collector, numbered(3), tmp_path, max_backoff_s=0.05)
    assert logger.counts.delivered == 3 and logger.counts.failed_posts == 9
    assert logger.counts.dropped == logger.counts.rejected == 0
    # Doubling from 0.01 s with jitter (at least half the step), capped at 0.05 s.
    steps = [min(0.05, 0.01 * 2**i) for i in range(9)]
    assert all(step / 2 <= wait <= step for wait, step in zip(waits, steps, strict=True))


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)).strftime(
        "%a, %d %b %Y %H:%M:%S GMT"
    )
    collector = Collector([(503, {"Retry-After": "3"}), (429, {"Retry-After": later}), 200])
    logger, waits = run_logger(collector, numbered(2), tmp_path)
    assert logger.counts.delivered == 2
    assert waits[0] >= 3.0 and 25.0 <= waits[1] <= 30.0


def test_a_refused_batch_is_rejected_not_retried(tmp_path: Path) -> None:
    collector = Collector([401, 200])
    logger, _ = run_logger(collector, numbered(2), tmp_path)
    assert logger.counts.failed_posts == 0 and logger.counts.dropped == 0
    assert logger.counts.rejected_refused == 2 and collector.posts == 1


def test_a_batch_too_big_is_sent_in_halves(tmp_path: Path) -> None:
    collector = Collector([413, 413])
    logger, _ = run_logger(collector, numbered(4), tmp_path)
    assert [len(b) for b in collector.batches] == [1, 1, 2]
    assert logger.counts.delivered == 4 and logger.counts.rejected == 0


def test_events_the_collector_rejects_are_counted_by_reason(tmp_path: Path) -> None:
    everyone_bad = httpx.Response(
        422,
        json={
            "received": 2,
            "stored": 0,
            "duplicates": 0,
            # Two reasons for one event: still one event rejected.
            "rejected": [
                {"index": 0, "field": "user_id", "reason": "must not contain NUL characters"},
                {"index": 0, "field": "ide", "reason": "must not contain NUL characters"},
                {"index": 1, "field": "plugin_version", "reason": "too short"},
            ],
        },
    )
    conflict = httpx.Response(
        200,
        json={
            "received": 2,
            "stored": 1,
            "duplicates": 0,
            "conflicts": 1,
            "conflicting": [
                {"index": 1, "event_id": "8e1d8f5c-4e1e-4d2a-9a55-1b2b3c4d5e6f", "fields": ["x"]}
            ],
            "rejected": [],
        },
    )
    collector = Collector([everyone_bad, conflict, 200])
    logger, _ = run_logger(collector, numbered(6), tmp_path, batch_size=2)
    counts = logger.counts
    assert (counts.rejected_invalid, counts.rejected_conflict, counts.delivered) == (2, 1, 3)
    assert counts.failed_posts == 0 and counts.dropped == 0


def test_an_answer_that_is_not_the_collectors_is_retried(tmp_path: Path) -> None:
    collector = Collector([httpx.Response(200, text="<html>welcome</html>"), 200])
    logger, _ = run_logger(collector, numbered(2), tmp_path)
    assert logger.counts.failed_posts == 1 and logger.counts.delivered == 2


def test_a_disabled_logger_takes_nothing() -> None:
    logger = EventLogger(None, None)
    assert not logger.enabled and logger.offer({"n": 1}) is False


@pytest.mark.parametrize(
    ("filepath", "language"),
    [
        ("src/app.py", "python"),
        ("C:\\code\\Main.JAVA", "java"),
        ("web/App.tsx", "typescript"),
        ("file:///home/ada/src/lib.rs", "rust"),
        ("notes.txt", "unknown"),
        (None, "unknown"),
    ],
)
def test_language_from_the_file_extension(filepath: str | None, language: str) -> None:
    request = CompletionRequest(prompt="x", user="u", filepath=filepath)
    assert request.language_name == language


def test_a_language_nobody_knows_is_other_and_an_alias_is_folded() -> None:
    assert CompletionRequest(prompt="x", user="u", language="__main__").language_name == "other"
    assert CompletionRequest(prompt="x", user="u", language="py").language_name == "python"
    # An unknown name with a known file: the file says.
    request = CompletionRequest(prompt="x", user="u", language="plaintext", filepath="a.go")
    assert request.language_name == "go"


def test_a_sent_language_wins_over_the_extension() -> None:
    request = CompletionRequest(prompt="x", user="u", language="Python", filepath="a.rs")
    assert request.language_name == "python"
    inferred = CompletionRequest(prompt="x", user="u", filepath="a.rs")
    assert inferred.language_name == "rust"
