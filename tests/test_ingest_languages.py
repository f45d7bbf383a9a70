"""Languages over real HTTP: whatever clients send, only known ids, unknown or other are stored."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import factories
from tests.database import PgConnection, row_by_id, rows

# What real clients and a fuzz run sent, and the id each must be stored as.
SENT_AND_STORED = [
    ("py", "python"),
    ("TypeScriptReact", "typescript"),
    ("javascriptreact", "javascript"),
    ("C#", "csharp"),
    (" Shell Script ", "shell"),
    ("__main__", "other"),
    ("0", "other"),
    ("\u0000", "other"),
    ("\u001b[31m", "other"),
    ("", "unknown"),
]


def other_languages(client: httpx.Client) -> dict[str, float]:
    """codelift_collector_other_languages_total per event type, and every label it has."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "codelift_collector_other_languages_total":
                assert set(sample.labels) == {"type"}
                found[sample.labels["type"]] = sample.value
    return found


@pytest.mark.parametrize("with_a_rejected_event", [False, True], ids=["whole", "partial"])
def test_languages_are_stored_as_known_ids_unknown_or_other(
    client: httpx.Client, pg: PgConnection, with_a_rejected_event: bool
) -> None:
    # A batch with a bad event takes the event-by-event path: both must fold alike.
    events = [factories.suggestion_shown(language=sent) for sent, _ in SENT_AND_STORED]
    bad = [factories.suggestion_shown(chars=-1)] if with_a_rejected_event else []
    response = client.post("/v1/events", json=factories.batch(*events, *bad))
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == len(events)
    for event, (sent, stored) in zip(events, SENT_AND_STORED, strict=True):
        row = row_by_id(pg, "suggestion_shown", event["event_id"])
        assert row["language"] == stored, sent
    assert {row["language"] for row in rows(pg, "suggestion_shown")} == {
        stored for _, stored in SENT_AND_STORED
    }


def test_a_retry_spelled_another_way_is_a_duplicate(client: httpx.Client) -> None:
    # The stored payload is the folded one: "py" and "python" are the same event.
    event = factories.suggestion_outcome(language="py")
    assert client.post("/v1/events", json=factories.batch(event)).json()["stored"] == 1
    again = client.post("/v1/events", json=factories.batch(event | {"language": "Python"}))
    assert again.json()["duplicates"] == 1
    assert again.json()["conflicts"] == 0


def test_other_languages_are_counted_by_type_without_the_value(client: httpx.Client) -> None:
    before = other_languages(client)
    batch = factories.batch(
        factories.suggestion_shown(language="__main__"),
        factories.suggestion_shown(language="\u0000"),
        factories.feedback(language="elm"),
        factories.feedback(language="python"),
        factories.exposure(language=""),
    )
    assert client.post("/v1/events", json=batch).json()["stored"] == 5
    after = other_languages(client)
    increase = {t: after[t] - before.get(t, 0.0) for t in after}
    assert {t: n for t, n in increase.items() if n} == {"suggestion_shown": 2, "feedback": 1}
    assert "__main__" not in client.get("/metrics").text
