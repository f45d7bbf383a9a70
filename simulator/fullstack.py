"""Full-stack mode: simulated developers ask the gateway for completions and send their events
to the collector over HTTP, as IDE plugins do.

Each simulated span (a day, in the demo) is planned first (sessions and trigger points), then
its completions are requested from the gateway, a bounded number at a time, each stamped with
its simulated time (``client_ts``; the gateway must run with ``trust_client_time``) so the
gateway's own ``completion_served`` events and exposures carry simulated time too. What the
developers then do follows from ``Behaviour``; their events are posted to the collector in
batches and retried until acknowledged (the collector is idempotent on event ids, so a retry
never doubles a row). The arms' latency effects of a scenario do not apply here: latency is
whatever the gateway really takes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from collector.bulk import PG_EPOCH
from simulator.behaviour import Behaviour, Served, Table, Truth
from simulator.code_context import context_for
from simulator.fleet import PLUGIN_VERSION, Developers, Sessions, Suggestions, plan_suggestions
from simulator.progress import ProgressBar
from simulator.scenario import Scenario

F64 = npt.NDArray[np.float64]
_PG_EPOCH_US = int(PG_EPOCH.timestamp() * 1_000_000)
# Batches of events per POST (the collector takes up to 1000 by default).
EVENT_BATCH = 500
MAX_ATTEMPTS = 8
FIRST_BACKOFF_S = 0.2
HTTP_TIMEOUT_S = 30.0


@dataclasses.dataclass(frozen=True)
class Endpoints:
    """Where the gateway and the collector are, and the keys to use."""

    gateway_url: str
    serve_key: str
    collector_url: str
    ingest_key: str


def _column_values(kind: str, values: npt.NDArray[Any]) -> list[Any]:
    if kind == "uuid":
        return [
            f"{v[:4].hex()}-{v[4:6].hex()}-{v[6:8].hex()}-{v[8:10].hex()}-{v[10:].hex()}"
            for v in (bytes(x).ljust(16, b"\0") for x in values)
        ]
    if kind == "timestamptz":
        stamps = (values.astype(np.int64) + _PG_EPOCH_US).astype("datetime64[us]")
        return [f"{text}Z" for text in np.datetime_as_string(stamps, unit="us")]
    if kind in ("text", "jsonb"):
        return [bytes(v).decode() for v in values]
    if kind == "bool":
        return [bool(v) for v in values]
    result: list[Any] = values.tolist()
    return result


def table_events(event_type: str, table: Table) -> list[dict[str, Any]]:
    """A table's rows as the collector's JSON events (NULLs left out)."""
    columns, nulls = table
    names = list(columns)
    values = [_column_values(kind, array) for kind, array in columns.values()]
    null_masks = [nulls.get(name) for name in names]
    n = len(values[0]) if values else 0
    events: list[dict[str, Any]] = []
    for row in range(n):
        event: dict[str, Any] = {"type": event_type}
        for name, column, mask in zip(names, values, null_masks, strict=True):
            if mask is None or not mask[row]:
                event[name] = column[row]
        events.append(event)
    return events


@dataclasses.dataclass
class SenderCounts:
    """What the event sender did: events sent, acknowledged (stored or duplicate), lost."""

    sent: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    failed: int = 0
    retries: int = 0
    batch_ms: list[float] = dataclasses.field(default_factory=list)

    @property
    def acknowledged(self) -> int:
        """Events the collector confirmed it holds."""
        return self.stored + self.duplicates


class EventSender:
    """Posts events to the collector in batches, retrying with backoff until acknowledged."""

    def __init__(self, client: httpx.AsyncClient, endpoints: Endpoints) -> None:
        self._client = client
        self._url = f"{endpoints.collector_url}/v1/events"
        self._headers = {"Authorization": f"Bearer {endpoints.ingest_key}"}
        self.counts = SenderCounts()
        self.rejections: list[str] = []

    async def send(self, events: Sequence[dict[str, Any]], *, parallel: int = 2) -> None:
        """Send every event; batches go ``parallel`` at a time."""
        batches = [events[i : i + EVENT_BATCH] for i in range(0, len(events), EVENT_BATCH)]
        gate = asyncio.Semaphore(parallel)

        async def one(batch: Sequence[dict[str, Any]]) -> None:
            async with gate:
                await self._post(batch)

        await asyncio.gather(*(one(batch) for batch in batches))

    async def _post(self, batch: Sequence[dict[str, Any]]) -> None:
        self.counts.sent += len(batch)
        backoff = FIRST_BACKOFF_S
        for attempt in range(1, MAX_ATTEMPTS + 1):
            started = time.perf_counter()
            try:
                response = await self._client.post(
                    self._url, json={"events": list(batch)}, headers=self._headers
                )
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code in (200, 422):
                self.counts.batch_ms.append((time.perf_counter() - started) * 1000)
                body = response.json()
                self.counts.stored += int(body.get("stored", 0))
                self.counts.duplicates += int(body.get("duplicates", 0))
                rejected = body.get("rejected", [])
                self.counts.rejected += len(rejected)
                self.rejections += [f"{r['field']}: {r['reason']}" for r in rejected[:3]]
                return
            if response is not None and response.status_code == 413 and len(batch) > 1:
                # Over this collector's batch or body limit: send it in halves.
                self.counts.sent -= len(batch)
                half = len(batch) // 2
                await self._post(batch[:half])
                await self._post(batch[half:])
                return
            # 503 (database away), 429, 5xx and broken connections are worth retrying:
            # the collector stores each event once, however often it is sent.
            if response is not None and response.status_code < 500 and response.status_code != 429:
                self.counts.failed += len(batch)
                self.rejections.append(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            if attempt < MAX_ATTEMPTS:
                self.counts.retries += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        self.counts.failed += len(batch)


@dataclasses.dataclass
class SpanStats:
    """One simulated span in full-stack mode."""

    completions: int
    errors: int
    events: int
    gateway_ms: list[float]
    wall_s: float
    # Of which asking the gateway for the completions.
    serve_s: float


class FullStackFleet:
    """The fleet driven through a real gateway and collector, span after span."""

    def __init__(
        self,
        scenario: Scenario,
        developers: Developers,
        endpoints: Endpoints,
        *,
        rng: np.random.Generator,
        concurrency: int = 8,
        max_tokens: int | None = None,
    ) -> None:
        self.scenario = scenario
        self.developers = developers
        self.endpoints = endpoints
        self.rng = rng
        self.concurrency = concurrency
        self.max_tokens = max_tokens
        self.arm_names = tuple(arm.name for arm in scenario.experiment.arms)
        self.behaviour = Behaviour(
            scenario=scenario, developers=developers, arm_names=self.arm_names
        )
        self.exposed_at = np.full(len(developers), np.inf)
        self.sessions_made = 0
        self.completions = 0
        self.gateway_errors: dict[str, int] = {}
        # Latency truth is not known here (the gateway's latency is real): acceptance only.
        self.truth = Truth()
        self.spans: list[SpanStats] = []

    async def run_span(
        self,
        client: httpx.AsyncClient,
        sender: EventSender,
        *,
        start: float,
        end: float,
        progress: ProgressBar | None = None,
    ) -> SpanStats:
        """Simulate the sessions starting in [start, end): completions, then the IDE's events."""
        began = time.perf_counter()
        sessions, suggestions = plan_suggestions(
            self.developers,
            self.scenario.fleet,
            self.rng,
            start=start,
            end=end,
            first_session=self.sessions_made,
        )
        self.sessions_made += len(sessions.ids)
        if progress is not None:
            progress.total = len(suggestions)
        serving = time.perf_counter()
        served, latencies = await self._serve(client, sessions, suggestions, progress)
        serve_s = time.perf_counter() - serving
        self.truth.add(self.behaviour.truth(suggestions, served, served.latency_ms))
        tables = self.behaviour.events(sessions, suggestions, served, self.rng)
        events = [e for name, table in tables.items() for e in table_events(name, table)]
        await sender.send(events)
        stats = SpanStats(
            completions=len(suggestions),
            errors=int(served.error.sum()),
            events=len(events),
            gateway_ms=latencies,
            wall_s=time.perf_counter() - began,
            serve_s=serve_s,
        )
        self.spans.append(stats)
        return stats

    async def _serve(
        self,
        client: httpx.AsyncClient,
        sessions: Sessions,
        suggestions: Suggestions,
        progress: ProgressBar | None,
    ) -> tuple[Served, list[float]]:
        n = len(suggestions)
        ids: list[bytes] = [b""] * n
        arm = np.full(n, -1, dtype=np.int64)
        latency = np.zeros(n)
        error = np.zeros(n, dtype=bool)
        chars = np.zeros(n, dtype=np.int64)
        lines = np.zeros(n, dtype=np.int64)
        observed: list[float] = []
        contexts = [
            context_for(self.rng, self.developers.languages[int(lang)])
            for lang in suggestions.language
        ]
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(n):
            queue.put_nowait(index)
        key = self.scenario.experiment.key
        dev = self.developers

        async def worker() -> None:
            while True:
                try:
                    index = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                user = int(suggestions.user[index])
                prefix, suffix, path = contexts[index]
                body: dict[str, Any] = {
                    "model": "codelift",
                    "prompt": prefix,
                    "suffix": suffix,
                    "user": dev.user_id(user),
                    "language": dev.languages[int(suggestions.language[index])],
                    "filepath": path,
                    "trigger": "manual" if suggestions.manual[index] else "auto",
                    "session_id": bytes(sessions.ids[suggestions.session[index]]).decode(),
                    "ide": dev.ides[int(dev.ide[user])],
                    "org": dev.orgs[int(dev.org[user])],
                    "plugin_version": PLUGIN_VERSION,
                    "client_ts": dt.datetime.fromtimestamp(
                        float(suggestions.ts[index]), dt.UTC
                    ).isoformat(),
                }
                if self.max_tokens is not None:
                    body["max_tokens"] = self.max_tokens
                started = time.perf_counter()
                try:
                    response = await client.post(
                        f"{self.endpoints.gateway_url}/v1/completions",
                        json=body,
                        headers={"Authorization": f"Bearer {self.endpoints.serve_key}"},
                    )
                    status = response.status_code
                except httpx.TransportError as exc:
                    response, status = None, 0
                    self.gateway_errors[type(exc).__name__] = (
                        self.gateway_errors.get(type(exc).__name__, 0) + 1
                    )
                elapsed = (time.perf_counter() - started) * 1000
                observed.append(elapsed)
                latency[index] = elapsed
                if response is not None and status == 200:
                    payload = response.json()
                    text = payload["choices"][0]["text"]
                    ids[index] = payload["id"].encode()
                    chars[index] = len(text)
                    lines[index] = text.count("\n") + 1 if text else 0
                    served_arm = payload.get("codelift", {}).get("arms", {}).get(key)
                    if served_arm in self.arm_names:
                        arm[index] = self.arm_names.index(served_arm)
                        self.exposed_at[user] = min(
                            self.exposed_at[user], float(suggestions.ts[index])
                        )
                else:
                    error[index] = True
                    ids[index] = f"failed-{self.completions + index}".encode()
                    if status:
                        self.gateway_errors[str(status)] = (
                            self.gateway_errors.get(str(status), 0) + 1
                        )
                if progress is not None:
                    progress.add()

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        self.completions += n
        served = Served(
            suggestion_ids=np.array(ids, dtype=object).astype(bytes) if n else np.array([], "S1"),
            arm=arm,
            exposed_at=self.exposed_at.copy(),
            latency_ms=latency,
            error=error,
            chars=chars,
            lines=lines,
        )
        return served, observed


def new_client(concurrency: int) -> httpx.AsyncClient:
    """An HTTP client with enough keep-alive connections for the fleet and the sender."""
    limits = httpx.Limits(
        max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8
    )
    return httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, limits=limits)
