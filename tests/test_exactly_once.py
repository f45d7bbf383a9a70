"""Exactly once per event_id, over real HTTP: re-stamped, re-typed and repeated retries, payload
conflicts, concurrent overlapping batches, and forgetting ids past the acceptance window."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from collector.event_ids import prune_event_ids, remembered_since
from collector.parsing import accepted_window, validate_events
from collector.store import EventStore, WriteResult
from core.db.connection import libpq_conninfo
from tests import factories
from tests.apikeys import Key
from tests.database import PgConnection, count, counts, row_by_id
from tests.factories import EVENT_TYPES, Event, iso
from tests.processes import service_process


def post(client: httpx.Client, *events: Event) -> httpx.Response:
    return client.post("/v1/events", json={"events": list(events)})


def later(event: Event, seconds: float) -> Event:
    """The same event re-stamped ``seconds`` later, as a client that stamps on send retries.

    Only ``client_ts`` moves: a typing window's bounds are what was measured, not a stamp.
    """
    stamped = dt.datetime.fromisoformat(event["client_ts"]) + dt.timedelta(seconds=seconds)
    return event | {"client_ts": iso(stamped)}


def other_type(event: Event) -> Event:
    """An event of another type that reuses ``event``'s id."""
    kind = "suggestion_shown" if event["type"] != "suggestion_shown" else "completion_served"
    return factories.make(kind) | {"event_id": event["event_id"]}


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_a_retry_restamped_59_s_later_is_a_duplicate(
    client: httpx.Client, pg: PgConnection, event_type: str
) -> None:
    event = factories.make(event_type)
    assert post(client, event).json()["stored"] == 1
    retry = post(client, later(event, 59)).json()
    assert (retry["stored"], retry["duplicates"], retry["conflicts"]) == (0, 1, 0)
    stored = row_by_id(pg, event_type, event["event_id"])
    assert stored["client_ts"] == dt.datetime.fromisoformat(event["client_ts"])


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_the_same_id_as_another_type_is_a_conflict_kept_out(
    client: httpx.Client, pg: PgConnection, event_type: str
) -> None:
    event = factories.make(event_type)
    post(client, event)
    intruder = other_type(event)
    answer = post(client, factories.exposure(), intruder).json()
    assert (answer["stored"], answer["duplicates"], answer["conflicts"]) == (1, 0, 1)
    assert answer["conflicting"] == [
        {"index": 1, "event_id": event["event_id"], "fields": ["type"]}
    ]
    assert count(pg, event_type) == 1 + (event_type == "exposure")
    assert count(pg, intruder["type"]) == (intruder["type"] == "exposure")


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_one_id_twice_in_a_batch_with_two_timestamps_is_stored_once(
    client: httpx.Client, pg: PgConnection, event_type: str
) -> None:
    event = factories.make(event_type)
    answer = post(client, event, later(event, 30)).json()
    assert (answer["stored"], answer["duplicates"], answer["conflicts"]) == (1, 1, 0)
    assert count(pg, event_type) == 1


def test_a_conflicting_payload_is_named_counted_and_not_stored(
    client: httpx.Client, pg: PgConnection, collector_url: str
) -> None:
    before = conflicts_on_metrics(collector_url)
    event = factories.suggestion_outcome(accepted_chars=64)
    post(client, event)
    changed = event | {"accepted_chars": 12, "reason": "word"}
    answer = post(client, factories.suggestion_outcome(), changed).json()
    assert (answer["stored"], answer["duplicates"], answer["conflicts"]) == (1, 0, 1)
    assert answer["conflicting"] == [
        {"index": 1, "event_id": event["event_id"], "fields": ["accepted_chars", "reason"]}
    ]
    assert row_by_id(pg, "suggestion_outcome", event["event_id"])["accepted_chars"] == 64
    assert conflicts_on_metrics(collector_url) == before + 1


def test_a_conflict_inside_one_batch_keeps_the_first(
    client: httpx.Client, pg: PgConnection
) -> None:
    event = factories.feedback(text="Too slow on big files")
    twin = event | {"text": "Fast on big files"}
    bad = factories.feedback(rating=9)
    answer = post(client, event, bad, twin).json()
    assert (answer["stored"], answer["duplicates"], answer["conflicts"]) == (1, 0, 1)
    # The index is the event's place in the batch, counting the rejected one before it.
    assert answer["conflicting"] == [
        {"index": 2, "event_id": event["event_id"], "fields": ["text"]}
    ]
    assert [r["index"] for r in answer["rejected"]] == [1]
    assert row_by_id(pg, "feedback", event["event_id"])["text"] == "Too slow on big files"


def test_a_restamped_retry_that_also_changed_payload_is_a_conflict(
    client: httpx.Client, pg: PgConnection
) -> None:
    event = factories.completion_served()
    post(client, event)
    answer = post(client, later(event, 5) | {"latency_ms": 999.0}).json()
    assert answer["conflicting"][0]["fields"] == ["latency_ms"]
    assert count(pg, "completion_served") == 1


def mixed_events(rng: random.Random, n: int) -> list[Event]:
    kinds = [kind for kind in EVENT_TYPES for _ in range(2)]
    return [factories.make(rng.choice(kinds)) for _ in range(n)]


@pytest.fixture(scope="module")
def production_collector(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The collector as deployed: two worker processes, 1,000-event batches, 8 connections each.

    Separate processes are what put overlapping batches into the database at the same moment;
    one event loop in a thread staggers them too much to meet.
    """
    env = {
        "CODELIFT_DATABASE_URL": database_url,
        "CODELIFT_ENVIRONMENT": "test",
        "CODELIFT_COLLECTOR_LOG_LEVEL": "warning",
        "CODELIFT_COLLECTOR_WORKERS": "2",
    }
    log = tmp_path_factory.mktemp("collector") / "collector.log"
    with service_process("collector", env, log=log) as service:
        yield service.url


def test_concurrent_overlapping_batches_neither_fail_nor_double_store(
    production_collector: str, ingest_key: Key, pg: PgConnection, clean_events: None
) -> None:
    # The attack that made 103 of 160 posts deadlock (503): the same 200 mixed events posted
    # 8 at a time in 8 different orders, then 4 overlapping windows of one stream.
    rng = random.Random(16)
    collector_url = production_collector
    retries_before = retries_on_metrics(collector_url)
    events = mixed_events(rng, 200)
    orders = [rng.sample(events, len(events)) for _ in range(8)]
    stream = mixed_events(rng, 250)
    windows = [stream[start : start + 100] for start in (0, 50, 100, 150)]
    bodies = [*orders, *windows]

    client = httpx.Client(base_url=collector_url, timeout=30, headers=ingest_key.headers)

    def send(batch: list[Event]) -> httpx.Response:
        return post(client, *batch)

    answers: list[httpx.Response] = []
    with client, ThreadPoolExecutor(max_workers=8) as pool:
        for _round in range(3):
            answers += pool.map(send, bodies)
    assert [a.status_code for a in answers] == [200] * len(answers)
    stored = sum(a.json()["stored"] for a in answers)
    duplicates = sum(a.json()["duplicates"] for a in answers)
    assert stored == len({e["event_id"] for e in [*events, *stream]}) == 450
    assert stored + duplicates == sum(len(b) for b in bodies) * 3
    assert sum(counts(pg).values()) == 450
    assert sum(a.json()["conflicts"] for a in answers) == 0
    # Lock order, not the retry, is what keeps them apart: no write needed a second attempt.
    assert retries_on_metrics(collector_url) == retries_before


def test_ids_are_forgotten_only_after_the_acceptance_window(pg: PgConnection) -> None:
    now = dt.datetime.now(dt.UTC)
    before = remembered_since(now, max_event_age_days=7)
    assert before == now - dt.timedelta(days=8)
    kept, gone = uuid.uuid4(), uuid.uuid4()
    for event_id, age in (
        (kept, dt.timedelta(days=7, hours=23)),
        (gone, dt.timedelta(days=8, minutes=1)),
    ):
        pg.execute(
            "INSERT INTO event_ids (event_id, event_type, client_ts, received_at) "
            "VALUES (%s, 'exposure', %s, %s)",
            (event_id, now - age, now - age),
        )
    try:
        assert prune_event_ids(pg, before=before) >= 1
        left = {r["event_id"] for r in pg.execute("SELECT event_id FROM event_ids").fetchall()}
        assert kept in left and gone not in left
    finally:
        pg.execute("DELETE FROM event_ids WHERE event_id = ANY(%s)", ([kept, gone],))


def test_an_id_forgotten_after_the_window_is_not_a_retry_any_more(
    client: httpx.Client, pg: PgConnection
) -> None:
    # The window is the promise: once an id's retry could not be accepted any more, the id
    # is forgotten, and only then may the same id be stored again.
    event = factories.suggestion_shown()
    post(client, event)
    pg.execute("UPDATE event_ids SET received_at = received_at - interval '9 days'")
    prune_event_ids(pg, before=remembered_since(dt.datetime.now(dt.UTC), max_event_age_days=7))
    answer = post(client, later(event, 1)).json()
    assert answer["stored"] == 1
    assert count(pg, "suggestion_shown") == 2


def metric_sum(collector_url: str, pattern: str) -> float:
    text = httpx.get(f"{collector_url}/metrics").text
    return sum(float(m.group(1)) for m in re.finditer(pattern + r" ([0-9.e+]+)", text))


def conflicts_on_metrics(collector_url: str) -> float:
    return metric_sum(
        collector_url, r'codelift_collector_events_total\{result="conflict",type="[^"]*"\}'
    )


def retries_on_metrics(collector_url: str) -> float:
    return metric_sum(collector_url, r"codelift_collector_write_retries_total\{[^}]*\}")


def test_eight_writers_of_the_same_events_in_eight_orders_never_deadlock(
    database_url: str, pg: PgConnection, clean_events: None
) -> None:
    # The store's own race, without HTTP in between to stagger the writers: 8 connections
    # write the same 1,000 new events at once, each in its own order. Taken in batch order,
    # the ids' locks deadlocked 34 of 40 such writes; taken in id order, none.
    rng = random.Random(40)
    now = dt.datetime.now(dt.UTC)
    window = accepted_window(now, max_age=dt.timedelta(days=7), max_skew=dt.timedelta(minutes=10))
    store = EventStore()

    async def race() -> list[WriteResult]:
        conns = [
            await psycopg.AsyncConnection.connect(libpq_conninfo(database_url)) for _ in range(8)
        ]
        try:
            for conn in conns:
                await store.prepare_connection(conn)
            results: list[WriteResult] = []
            for _round in range(3):
                batch = validate_events(mixed_events(rng, 1000), window=window).valid
                orders = [rng.sample(list(batch), len(batch)) for _ in conns]
                results += await asyncio.gather(
                    *(
                        store.write(c, o, received_at=now)
                        for c, o in zip(conns, orders, strict=True)
                    )
                )
            return results
        finally:
            for conn in conns:
                await conn.close()

    results = asyncio.run(race())
    assert sum(sum(r.stored.values()) for r in results) == 3000
    assert sum(sum(r.duplicates.values()) for r in results) == 3 * 7 * 1000
    assert sum(counts(pg).values()) == 3000
