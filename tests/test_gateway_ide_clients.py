"""Each real IDE client's recorded body, replayed unchanged against the gateway on the local engine.

The bodies (``tests/fixtures/ide_clients/``, sources in its README) are what Continue, Tabby,
llama.vscode and llm-ls send, built from their own source code; only ``<KEY>`` is replaced, by a
developer's personal key, and a ``model`` the user configures is set to ``codelift``, as the
README's client sections say to. Each must get a well-formed completion in the client's own response
shape, served as the key's developer, in the language of the file the request is about.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.auth.scopes import Scope
from tests import test_gateway_local
from tests.apikeys import Key, MakeKey
from tests.database import PgConnection
from tests.test_gateway import served_row

FIXTURES = Path(__file__).parent / "fixtures" / "ide_clients"
CASES = sorted(p.stem for p in FIXTURES.glob("*.json"))
DEVELOPER = "dev-grace"

# The module-scoped gateway on the real local engine.
local_engine = test_gateway_local.local_engine
gateway_url = test_gateway_local.gateway_url


def recorded(case: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{case}.json").read_text())
    return data


def with_key(headers: dict[str, str], key: Key) -> dict[str, str]:
    """The recorded headers with the placeholder replaced by the key's secret."""
    return {name: value.replace("<KEY>", key.secret) for name, value in headers.items()}


def read(body: Any, path: str) -> Any:
    """``choices[0].delta.content``-style paths into a JSON body."""
    value = body
    for part in path.replace("]", "").replace("[", ".").split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def stream_bodies(response: httpx.Response) -> list[dict[str, Any]]:
    return [
        json.loads(line[len("data: ") :])
        for line in response.text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


# What each client reads of the answer (from its source; see the fixtures' "reads").
TEXT_AT = {
    "continue_legacy": "choices[0].text",
    "continue_fim": "choices[0].delta.content",
    "tabby_openai": "choices[0].text",
    "tabby_native": "choices[0].text",
    "llama_vscode_infill": "content",
    "llm_ls_openai": "choices[0].text",
    "llm_ls_tgi": "generated_text",
}


def test_every_recorded_client_has_a_case() -> None:
    assert set(CASES) == set(TEXT_AT)


@pytest.mark.parametrize("case", CASES)
def test_a_recorded_client_body_gets_a_completion_in_its_own_shape(
    case: str, gateway_url: str, make_key: MakeKey, pg: PgConnection, clean_events: None
) -> None:
    key = make_key(f"{case} editor", [Scope.SERVE], user_id=DEVELOPER)
    request = recorded(case)["request"]
    body = dict(request["body"])
    if "model" in body and request["path"] != "/infill":  # llama.cpp's server ignores it
        body["model"] = "codelift"
    response = httpx.request(
        request["method"],
        f"{gateway_url}{request['path']}",
        content=json.dumps(body),
        headers=with_key(request.get("headers", {}), key),
        timeout=120,
    )
    assert response.status_code == 200, response.text
    streamed = bool(body.get("stream"))
    if streamed:
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = stream_bodies(response)
        texts = [read(c, TEXT_AT[case]) for c in chunks if c.get("choices") != []]
        assert all(isinstance(t, str) for t in texts) and texts
        # Tabby panics when [DONE] comes before a finish reason: the last chunk carries one.
        assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
        suggestion = chunks[-1]["codelift"]["suggestion_id"]
    else:
        answer = response.json()
        assert isinstance(read(answer, TEXT_AT[case]), str)
        suggestion = answer["codelift"]["suggestion_id"]
    row = served_row(pg, suggestion)
    assert row["user_id"] == DEVELOPER
    assert row["error"] is None
    # Every recorded body is about a Python file, said by a path or by the prompt's markers;
    # llama.vscode's and llm-ls's name no file at all, and Tabby's OpenAI binding cuts its
    # prompt mid-header.
    nameless = ("llama_vscode_infill", "llm_ls_openai", "llm_ls_tgi", "tabby_openai")
    assert row["language"] == ("unknown" if case in nameless else "python"), row
