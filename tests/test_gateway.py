"""The gateway over real HTTP: the official openai client, experiment arms, completion_served
rows in the collector's database, errors, auth, rate limits and client disconnects.

The backend here is ``ScriptedBackend`` (deterministic text); tests/test_gateway_local.py runs
the same client against the real local engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import Engine

from experiments.assignment.exposures import ExposureRecorder
from experiments.assignment.service import AssignmentService
from experiments.variants import Decoding, FimFamily, PostProcess, Variant
from serving.backend import GenerationRequest
from serving.gateway.config import GatewaySettings
from serving.gateway.main import create_app
from serving.gateway.server import running
from serving.scripted_backend import ScriptedBackend
from tests.apikeys import Key
from tests.database import PgConnection
from tests.experiment_factories import DEFAULT_VARIANT, CommittedRegistry, arm, definition
from tests.servers import running_gateway

WAIT_S = 10.0
PREFIX = "def add(a, b):\n"
SUFFIX = "\n\nprint(add(1, 2))\n"


def reply(request: GenerationRequest) -> str:
    """Two body lines and then a new function, which block trimming must cut off."""
    return "    total = a + b\n    return total\n\ndef other():\n    pass\n"


def gateway_settings(database_url: str, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "environment": "test",
        "default_variant": DEFAULT_VARIANT,
        # Experiments come from the assignment service a test builds (or none at all).
        "experiments": False,
        "event_batch_size": 20,
        "event_flush_interval_s": 0.05,
        "auth_cache_ttl_s": 0.3,
        "rate_limit_per_s": 1000.0,
        "rate_limit_burst": 1000,
    }
    values.update(overrides)
    return GatewaySettings.model_validate(values)


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def served_row(pg: PgConnection, suggestion_id: str) -> Any:
    def fetch() -> Any:
        return pg.execute(
            "SELECT arms, model, finish_reason, completion_chars, completion_lines, latency_ms,"
            " backend_latency_ms, language, user_id, error FROM completion_served"
            " WHERE suggestion_id = %s",
            (suggestion_id,),
        ).fetchone()

    return wait_for(fetch, f"completion_served row {suggestion_id}")


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend(reply, name="local")


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


@pytest.fixture
def client(gateway_url: str, serve_only_key: Key, clean_events: None) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{gateway_url}/v1", api_key=serve_only_key.secret, max_retries=0, timeout=15
    ) as client:
        yield client


def complete(client: openai.OpenAI, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "model": "codelift",
        "prompt": PREFIX,
        "suffix": SUFFIX,
        "user": "dev-1",
        "max_tokens": 32,
        "extra_body": {"language": "python", "trigger": "manual", "filepath": "src/add.py"},
    }
    values.update(overrides)
    return client.completions.create(**values)


def test_the_openai_client_gets_a_post_processed_completion(
    client: openai.OpenAI, backend: ScriptedBackend, pg: PgConnection
) -> None:
    response = complete(client, temperature=1.5, top_p=0.5)
    assert response.id.startswith("cmpl-")
    assert response.object == "text_completion"
    assert response.model == DEFAULT_VARIANT.model
    [choice] = response.choices
    assert choice.text == "    total = a + b\n    return total"
    assert choice.finish_reason == "stop"
    assert response.model_extra is not None
    assert response.model_extra["codelift"]["arms"] == {}
    assert response.model_extra["codelift"]["suggestion_id"] == response.id

    sent = backend.requests[-1]
    assert sent.prompt == f"<fim_prefix>{PREFIX}<fim_suffix>{SUFFIX}<fim_middle>"
    # Decoding is pinned by the arm, whatever the request asks.
    assert (sent.temperature, sent.top_p) == (0.2, 0.95)
    assert sent.max_tokens == 32
    assert "<fim_middle>" in sent.stop and sent.model == DEFAULT_VARIANT.model

    row = served_row(pg, response.id)
    assert row["arms"] == {} and row["model"] == DEFAULT_VARIANT.model
    assert (row["finish_reason"], row["language"], row["user_id"]) == ("stop", "python", "dev-1")
    assert row["error"] is None
    assert (row["completion_chars"], row["completion_lines"]) == (len(choice.text), 2)
    assert row["latency_ms"] >= row["backend_latency_ms"] >= 0


def test_request_max_tokens_only_lowers_the_arms_limit(
    client: openai.OpenAI, backend: ScriptedBackend
) -> None:
    complete(client, max_tokens=4000)
    assert backend.requests[-1].max_tokens == DEFAULT_VARIANT.decoding.max_tokens
    complete(client, max_tokens=5, stop=["\n\n"])
    assert backend.requests[-1].max_tokens == 5
    assert backend.requests[-1].stop[-1] == "\n\n"


def test_streaming_gives_the_same_text(client: openai.OpenAI, pg: PgConnection) -> None:
    whole = complete(client).choices[0].text
    stream = complete(client, stream=True)
    pieces, ids, finish = [], set(), None
    for chunk in stream:
        ids.add(chunk.id)
        pieces.append(chunk.choices[0].text)
        finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces) == whole
    assert finish == "stop"
    [suggestion_id] = ids
    assert served_row(pg, suggestion_id)["completion_chars"] == len(whole)


def test_n_choices(client: openai.OpenAI) -> None:
    response = complete(client, n=3)
    assert [c.index for c in response.choices] == [0, 1, 2]


def test_models_lists_the_variants(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [DEFAULT_VARIANT.model]


def test_arms_header_and_unknown_fields(gateway_url: str, serve_only_key: Key) -> None:
    body = {"prompt": "x = ", "user": "dev-2", "frequency_penalty": 0.5, "best_of": 1}
    response = httpx.post(
        f"{gateway_url}/v1/completions", json=body, headers=serve_only_key.headers
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-codelift-arms"] == ""
    assert response.headers["x-request-id"] == response.json()["codelift"]["request_id"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "x"}, "user"),
        ({"user": "u"}, "prompt"),
        ({"prompt": "x", "user": "u", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "x", "user": "u", "temperature": "hot"}, "temperature"),
        ({"prompt": "x", "user": "u", "trigger": "sometimes"}, "trigger"),
        ({"prompt": ["a", "b"], "user": "u"}, "prompt"),
        ({"prompt": "x", "user": "u", "n": 2, "stream": True}, "n"),
    ],
)
def test_bad_requests_name_the_field(
    gateway_url: str, serve_only_key: Key, body: dict[str, Any], param: str
) -> None:
    response = httpx.post(
        f"{gateway_url}/v1/completions", json=body, headers=serve_only_key.headers
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert param in error["message"]


def test_invalid_json_is_a_400(gateway_url: str, serve_only_key: Key) -> None:
    response = httpx.post(
        f"{gateway_url}/v1/completions", content=b"{not json", headers=serve_only_key.headers
    )
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]["message"]


def test_unknown_model_is_a_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        complete(client, model="gpt-9")
    assert caught.value.code == "model_not_found"


def test_auth(gateway_url: str, ingest_key: Key, revoked_key: Key, serve_only_key: Key) -> None:
    base = f"{gateway_url}/v1"
    for key, error in [
        ("not-a-key", openai.AuthenticationError),
        (ingest_key.secret, openai.PermissionDeniedError),
        (revoked_key.secret, openai.PermissionDeniedError),
    ]:
        with openai.OpenAI(base_url=base, api_key=key, max_retries=0) as client:
            with pytest.raises(error):
                complete(client)
    response = httpx.post(f"{gateway_url}/v1/completions", json={"prompt": "x", "user": "u"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["type"] == "authentication_error"


def test_backend_down_is_a_503_with_retry_after(
    gateway_url: str, serve_only_key: Key, backend: ScriptedBackend, pg: PgConnection
) -> None:
    backend.down = True
    for stream in (False, True):
        response = httpx.post(
            f"{gateway_url}/v1/completions",
            json={"prompt": "x", "user": "u", "stream": stream},
            headers=serve_only_key.headers,
        )
        assert response.status_code == 503
        assert response.headers["retry-after"] == "2"
        assert response.json()["error"]["code"] == "backend_unavailable"


def test_rate_limit_per_key(
    database_url: str, serve_only_key: Key, backend: ScriptedBackend
) -> None:
    settings = gateway_settings(database_url, rate_limit_per_s=0.5, rate_limit_burst=2)
    with running_gateway(settings, {"local": backend}) as url:
        statuses = []
        for _ in range(3):
            response = httpx.post(
                f"{url}/v1/completions",
                json={"prompt": "x", "user": "u"},
                headers=serve_only_key.headers,
            )
            statuses.append(response.status_code)
        assert statuses == [200, 200, 429]
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]["type"] == "rate_limit_error"


def test_client_disconnect_cancels_the_backend_request(
    database_url: str, serve_only_key: Key
) -> None:
    slow = ScriptedBackend("pass", name="local", delay_s=30.0)
    settings = gateway_settings(database_url)
    with running_gateway(settings, {"local": slow}) as url:
        for stream in (False, True):
            cancelled = slow.cancelled
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(
                    f"{url}/v1/completions",
                    json={"prompt": "x", "user": "u", "stream": stream},
                    headers=serve_only_key.headers,
                    timeout=0.3,
                )
            wait_for(lambda: slow.cancelled > cancelled, "the backend request cancelled")  # noqa: B023


def metric(url: str, name: str) -> float:
    """One sample of the gateway's /metrics (``name`` with its labels), 0 when absent."""
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return 0.0


def test_a_down_collector_never_fails_a_completion(
    database_url: str, serve_only_key: Key, backend: ScriptedBackend, tmp_path: Path
) -> None:
    # Port 1 refuses connections: every batch fails and is retried; the events wait on disk.
    settings = gateway_settings(
        database_url,
        collector_url="http://127.0.0.1:1",
        ingest_key="whatever",
        event_backoff_s=0.01,
        event_max_backoff_s=0.05,
        event_spool_dir=tmp_path,
    )
    with (
        running_gateway(settings, {"local": backend}) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key=serve_only_key.secret, max_retries=0) as client,
    ):
        for _ in range(5):
            assert complete(client).choices[0].text
        wait_for(
            lambda: metric(url, "codelift_gateway_event_spool_events") == 5,
            "the events spooled",
        )
        wait_for(
            lambda: metric(url, "codelift_gateway_event_posts_failed_total") >= 2,
            "posts retried",
        )
        assert metric(url, "codelift_gateway_events_dropped_total") == 0


def test_a_full_event_buffer_drops_and_counts(
    database_url: str, serve_only_key: Key, backend: ScriptedBackend, tmp_path: Path
) -> None:
    # The spool's writer waits a second for more events: meanwhile the one-event buffer is full.
    settings = gateway_settings(
        database_url,
        collector_url="http://127.0.0.1:1",
        ingest_key="whatever",
        event_queue_size=1,
        event_flush_interval_s=1.0,
        event_spool_dir=tmp_path,
    )
    with (
        running_gateway(settings, {"local": backend}) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key=serve_only_key.secret, max_retries=0) as client,
    ):
        started = time.monotonic()
        for _ in range(5):
            complete(client)
        # Completions went on regardless.
        assert time.monotonic() - started < 1.0
        assert metric(url, "codelift_gateway_events_dropped_total") == 4


def test_experiment_arms_in_response_header_and_completion_served(
    database_url: str,
    engine: Engine,
    registry: CommittedRegistry,
    collector_url: str,
    ingest_key: Key,
    serve_only_key: Key,
    backend: ScriptedBackend,
    pg: PgConnection,
    clean_events: None,
    tmp_path: Path,
) -> None:
    registry.apply(
        definition(
            "gw-decoding",
            arms=[
                arm("control", 0.5),
                arm(
                    "treatment",
                    0.5,
                    model="codelift-fim-large",
                    fim_template="codellama",
                    decoding={"temperature": 0.6, "max_tokens": 8},
                ),
            ],
        )
    )
    recorder = ExposureRecorder(engine, flush_interval_s=0.05)
    service = AssignmentService(
        engine, DEFAULT_VARIANT, refresh_interval_s=0.05, exposure_recorder=recorder
    )
    recorder.start()
    service.start()
    settings = gateway_settings(
        database_url,
        collector_url=collector_url,
        ingest_key=ingest_key.secret,
        event_spool_dir=tmp_path,
    )
    try:
        with (
            running(create_app(settings, {"local": backend}, service)) as url,
            openai.OpenAI(
                base_url=f"{url}/v1", api_key=serve_only_key.secret, max_retries=0
            ) as client,
        ):
            assert {m.id for m in client.models.list()} == {
                DEFAULT_VARIANT.model,
                "codelift-fim-large",
            }
            seen: dict[str, str] = {}
            for i in range(40):
                raw = client.completions.with_raw_response.create(
                    model="codelift", prompt=PREFIX, suffix=SUFFIX, user=f"user-{i}"
                )
                response = raw.parse()
                assert response.model_extra is not None
                arms = response.model_extra["codelift"]["arms"]
                assert raw.headers["x-codelift-arms"] == f"gw-decoding={arms['gw-decoding']}"
                sent = backend.requests[-1]
                if arms["gw-decoding"] == "treatment":
                    assert sent.prompt == f"<PRE> {PREFIX} <SUF>{SUFFIX} <MID>"
                    assert (sent.temperature, sent.max_tokens) == (0.6, 8)
                    assert response.model == "codelift-fim-large"
                else:
                    assert sent.prompt.startswith("<fim_prefix>")
                    assert sent.temperature == 0.2
                seen[response.id] = arms["gw-decoding"]
            assert set(seen.values()) == {"control", "treatment"}
            for suggestion_id, arm_name in list(seen.items())[:5]:
                assert served_row(pg, suggestion_id)["arms"] == {"gw-decoding": arm_name}
        # Exposures come from the assignment service's recorder, once per user and experiment.
        assert recorder.flush()
        exposures = pg.execute(
            "SELECT user_id, arm FROM exposure WHERE experiment = 'gw-decoding'"
        ).fetchall()
        assert len(exposures) == 40
        assert {row["arm"] for row in exposures} == {"control", "treatment"}
    finally:
        service.stop()
        recorder.stop()


def test_the_default_variant_from_settings_decides_the_template(
    database_url: str, serve_only_key: Key, backend: ScriptedBackend
) -> None:
    variant = Variant(
        model="qwen-coder",
        fim_template=FimFamily.QWEN25_CODER,
        decoding=Decoding(temperature=0.0, max_tokens=16, stop=("\n\n",)),
        context_tokens=16,
        postprocess=PostProcess(trim="none", drop_if_repeats_suffix=False),
    )
    settings = gateway_settings(database_url, default_variant=variant)
    with (
        running_gateway(settings, {"local": backend}) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key=serve_only_key.secret, max_retries=0) as client,
    ):
        response = complete(client, model="qwen-coder", prompt="a" * 400, suffix="b" * 400)
        sent = backend.requests[-1]
        # 16 tokens of 4 characters: 11 for the prefix's end, 5 for the suffix's start.
        assert sent.prompt == (
            "<|fim_prefix|>" + "a" * 44 + "<|fim_suffix|>" + "b" * 20 + "<|fim_middle|>"
        )
        assert sent.temperature == 0.0 and sent.stop[-1] == "\n\n"
        assert response.choices[0].text == reply(sent).split("\n\n")[0]


def test_the_budget_is_cut_to_what_the_backends_context_holds(
    database_url: str, serve_only_key: Key
) -> None:
    # A 64-token model: the arm's 2048-token budget would overflow it and lose the FIM layout.
    short = ScriptedBackend(reply, name="local", context_length=64)
    variant = Variant(
        model="qwen-coder",
        fim_template=FimFamily.QWEN25_CODER,
        decoding=Decoding(temperature=0.0, max_tokens=16),
        context_tokens=2048,
        postprocess=PostProcess(trim="none", drop_if_repeats_suffix=False),
    )
    settings = gateway_settings(database_url, default_variant=variant)
    with (
        running_gateway(settings, {"local": short}) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key=serve_only_key.secret, max_retries=0) as client,
    ):
        complete(client, model="qwen-coder", prompt="a" * 4000, suffix="b" * 4000)
        sent = short.requests[-1]
        # 64 - 16 for the completion - 11 for the template = 37 tokens of code, split 70/30.
        assert sent.prompt == (
            "<|fim_prefix|>" + "a" * 100 + "<|fim_suffix|>" + "b" * 48 + "<|fim_middle|>"
        )
        assert short.count_tokens(sent.prompt) + 16 <= 64


def test_a_client_leaving_mid_stream_cancels_the_backend_request(
    database_url: str, serve_only_key: Key
) -> None:
    words = " ".join(f"w{i}" for i in range(200))
    slow = ScriptedBackend(
        words,
        name="local",
        token_delay_s=0.05,
    )
    variant = DEFAULT_VARIANT.model_copy(
        update={"postprocess": PostProcess(trim="none", drop_if_repeats_suffix=False)}
    )
    settings = gateway_settings(database_url, default_variant=variant)
    with running_gateway(settings, {"local": slow}) as url:
        with httpx.stream(
            "POST",
            f"{url}/v1/completions",
            json={"prompt": "x", "user": "u", "stream": True},
            headers=serve_only_key.headers,
        ) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data:"):
                    break
        wait_for(lambda: slow.cancelled == 1, "the streaming backend request cancelled")
