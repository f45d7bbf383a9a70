"""The gateway's ``variant`` field: an evaluating key names the variant instead of being
assigned one (what ``codelift backtest`` relies on); other keys are refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.auth.scopes import Scope
from serving.scripted_backend import ScriptedBackend
from tests.apikeys import Key, MakeKey
from tests.database import PgConnection
from tests.servers import running_gateway
from tests.test_gateway import gateway_settings, served_row

VARIANT = {
    "decoding": {"temperature": 0.0, "max_tokens": 7, "seed": 3},
    "postprocess": {"trim": "none"},
}


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend("return a + b", name="local")


@pytest.fixture
def gateway_url(
    database_url: str,
    collector_url: str,
    ingest_key: Key,
    backend: ScriptedBackend,
    tmp_path: Path,
) -> Iterator[str]:
    settings = gateway_settings(
        database_url,
        collector_url=collector_url,
        ingest_key=ingest_key.secret,
        event_spool_dir=tmp_path,
    )
    with running_gateway(settings, {"local": backend}) as url:
        yield url


def post(url: str, key: Key, **extra: Any) -> httpx.Response:
    body = {"prompt": "def add(a, b):\n    ", "suffix": "\n", "user": "dev-9", **extra}
    return httpx.post(f"{url}/v1/completions", json=body, headers=key.headers, timeout=15)


@pytest.mark.parametrize("scope", [Scope.EVALUATE, Scope.ADMIN])
def test_an_evaluating_key_gets_the_variant_it_names(
    gateway_url: str, backend: ScriptedBackend, make_key: MakeKey, scope: Scope
) -> None:
    key = make_key(f"backtest-{scope.value}", [Scope.SERVE, scope])
    response = post(gateway_url, key, variant=VARIANT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["text"] == "return a + b"
    assert body["codelift"]["arms"] == {}  # nothing assigned
    sent = backend.requests[-1]
    assert (sent.temperature, sent.max_tokens, sent.seed) == (0.0, 7, 3)
    assert sent.model == "codelift-fim-small"  # the rest is the default variant's


def test_a_serving_key_may_not_choose_a_variant(
    gateway_url: str, serve_only_key: Key, backend: ScriptedBackend
) -> None:
    response = post(gateway_url, serve_only_key, variant=VARIANT)
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["param"] == "variant" and "'evaluate'" in error["message"]
    assert backend.requests == []
    assert post(gateway_url, serve_only_key).status_code == 200


def test_a_bad_variant_is_a_400_naming_the_field(gateway_url: str, make_key: MakeKey) -> None:
    key = make_key("backtest-bad", [Scope.SERVE, Scope.EVALUATE])
    response = post(gateway_url, key, variant={"decoding": {"temperature": 9}})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "variant"
    response = post(gateway_url, key, variant={"colour": "blue"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "variant"


def test_evaluation_traffic_is_not_logged_as_a_developers(
    gateway_url: str, make_key: MakeKey, pg: PgConnection, clean_events: None
) -> None:
    key = make_key("backtest-events", [Scope.SERVE, Scope.EVALUATE])
    evaluated = post(gateway_url, key, variant=VARIANT).json()["id"]
    served = post(gateway_url, key).json()["id"]
    served_row(pg, served)  # events go out in order: the evaluated one would be there by now
    rows = pg.execute(
        "SELECT count(*) AS n FROM completion_served WHERE suggestion_id = %s", (evaluated,)
    ).fetchone()
    assert rows is not None and rows["n"] == 0
