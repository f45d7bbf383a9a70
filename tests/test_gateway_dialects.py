"""The gateway speaks each IDE client's dialect: bodies in, response shapes out, user from the key.

A scripted backend shows what reached the model (one template, never two) and answers a fixed
text; ``tests/test_gateway_ide_clients.py`` replays the real clients' recorded bodies.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from core.auth.scopes import Scope
from experiments.variants import FimFamily
from serving import fim
from serving.backend import GenerationRequest
from serving.scripted_backend import ScriptedBackend
from tests import test_gateway
from tests.apikeys import Key, MakeKey
from tests.database import PgConnection
from tests.test_gateway import served_row

PREFIX = "def area(radius):\n    return "
SUFFIX = "\n\n\nprint(area(2.0))\n"
ANSWER = "3.14159 * radius ** 2"


def reply(request: GenerationRequest) -> str:
    return ANSWER


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend(reply, name="local")


# test_gateway's gateway (with its collector), on this module's backend.
gateway_url = test_gateway.gateway_url


@pytest.fixture
def personal_key(make_key: MakeKey, clean_events: None) -> Key:
    """A developer's own key: requests made with it are dev-ada's."""
    return make_key("ada's editor", [Scope.SERVE], user_id="dev-ada")


def post(url: str, path: str, key: Key, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, headers=key.headers, timeout=15)


def sent_prompt(backend: ScriptedBackend) -> str:
    return backend.requests[-1].prompt


def events(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON bodies of a server-sent event stream (``[DONE]`` left out)."""
    out = []
    for line in response.text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line[len("data: ") :]))
    return out


@pytest.mark.parametrize(
    "family",
    [
        f
        for f in FimFamily
        if f.value in {"starcoder", "qwen2.5-coder", "deepseek-coder", "codellama", "codegemma"}
    ],
)
def test_a_rendered_prompt_is_split_back_exactly(family: FimFamily) -> None:
    rendered = fim.split_rendered(fim.render(family, PREFIX, SUFFIX))
    assert rendered is not None
    assert (rendered.prefix, rendered.suffix) == (PREFIX, SUFFIX)


def test_plain_code_is_never_taken_for_a_template() -> None:
    assert fim.split_rendered(PREFIX) is None
    assert fim.split_rendered("xs[PREFIX] = 1\n<fim_prefix>") is None
    with_repo = "<file_sep>src/area.py\n" + fim.render(FimFamily.STARCODER, PREFIX, SUFFIX)
    rendered = fim.split_rendered(with_repo)
    assert rendered is not None and rendered.preamble == "<file_sep>src/area.py\n"
    assert (rendered.prefix, rendered.suffix) == (PREFIX, SUFFIX)


def test_a_client_rendered_prompt_is_templated_once_and_the_user_comes_from_the_key(
    gateway_url: str, personal_key: Key, backend: ScriptedBackend, pg: PgConnection
) -> None:
    prompt = fim.render(FimFamily.STARCODER, PREFIX, SUFFIX)
    # Continue's legacy body: its own template, 12 stop strings, no user.
    stops = [
        "\n\n",
        "\ndef",
        "\nclass",
        "\nif",
        "\n#",
        "<fim_prefix>",
        "<fim_suffix>",
        "<fim_middle>",
        "<file_sep>",
        "<|endoftext|>",
        "</s>",
        "\n```",
    ]
    response = post(
        gateway_url,
        "/v1/completions",
        personal_key,
        {"model": "codelift", "prompt": prompt, "max_tokens": 64, "stop": stops},
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["text"] == ANSWER
    assert sent_prompt(backend).count("<fim_prefix>") == 1
    assert sent_prompt(backend) == fim.render(FimFamily.STARCODER, PREFIX, SUFFIX)
    row = served_row(pg, response.json()["id"])
    assert row["user_id"] == "dev-ada"


def test_a_personal_key_wins_over_the_body_and_a_shared_key_needs_a_user(
    gateway_url: str, personal_key: Key, serve_only_key: Key, pg: PgConnection
) -> None:
    body = {"prompt": PREFIX, "suffix": SUFFIX, "user": "mallory"}
    mine = post(gateway_url, "/v1/completions", personal_key, body)
    assert served_row(pg, mine.json()["id"])["user_id"] == "dev-ada"
    shared = post(gateway_url, "/v1/completions", serve_only_key, body)
    assert served_row(pg, shared.json()["id"])["user_id"] == "mallory"
    missing = post(gateway_url, "/v1/completions", serve_only_key, {"prompt": PREFIX})
    assert missing.status_code == 400
    error = missing.json()["error"]
    assert error["param"] == "user"
    assert "user is required" in error["message"] and "--user" in error["message"]


def test_up_to_16_stop_strings_and_a_clear_error_past_them(
    gateway_url: str, personal_key: Key
) -> None:
    many = [f"\n{i}" for i in range(16)]
    assert (
        post(
            gateway_url, "/v1/completions", personal_key, {"prompt": PREFIX, "stop": many}
        ).status_code
        == 200
    )
    refused = post(
        gateway_url, "/v1/completions", personal_key, {"prompt": PREFIX, "stop": [*many, "\nx"]}
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == (
        "stop: at most 16 stop strings are accepted, got 17"
    )
    assert refused.json()["error"]["param"] == "stop"


def test_the_openai_client_gets_usage_in_a_stream_and_retrieves_a_model(
    gateway_url: str, personal_key: Key
) -> None:
    with openai.OpenAI(
        base_url=f"{gateway_url}/v1", api_key=personal_key.secret, max_retries=0, timeout=15
    ) as client:
        chunks = list(
            client.completions.create(
                model="codelift",
                prompt=PREFIX,
                suffix=SUFFIX,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        assert text == ANSWER
        last = chunks[-1]
        assert last.choices == [] and last.usage is not None
        assert last.usage.completion_tokens > 0
        assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
        served = client.models.list().data[0].id
        assert client.models.retrieve(served).id == served
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("no-such-model")


def test_tabby_native_body_and_shape(
    gateway_url: str, personal_key: Key, backend: ScriptedBackend, pg: PgConnection
) -> None:
    response = post(
        gateway_url,
        "/v1/completions",
        personal_key,
        {
            "language": "python",
            "segments": {
                "prefix": PREFIX,
                "suffix": SUFFIX,
                "filepath": "file:///home/ada/geometry/area.py",
                "git_url": "https://example.com/ada/geometry.git",
            },
            "temperature": 0.1,
            "mode": "standard",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"] == [{"index": 0, "text": ANSWER}]
    assert body["id"].startswith("cmpl-")
    assert PREFIX in sent_prompt(backend) and SUFFIX in sent_prompt(backend)
    row = served_row(pg, body["id"])
    assert (row["user_id"], row["language"]) == ("dev-ada", "python")
    refused = post(gateway_url, "/v1/completions", personal_key, {"segments": {"suffix": ""}})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "segments"


def test_fim_completions_in_mistrals_shape_plain_and_streamed(
    gateway_url: str, personal_key: Key, backend: ScriptedBackend
) -> None:
    body = {"model": "codelift", "prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 32}
    plain = post(gateway_url, "/v1/fim/completions", personal_key, body)
    assert plain.status_code == 200, plain.text
    choice = plain.json()["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": ANSWER}
    assert plain.json()["object"] == "chat.completion"
    assert sent_prompt(backend) == fim.render(FimFamily.STARCODER, PREFIX, SUFFIX)
    streamed = post(gateway_url, "/v1/fim/completions", personal_key, {**body, "stream": True})
    chunks = events(streamed)
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == ANSWER
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert streamed.text.rstrip().endswith("data: [DONE]")


def test_infill_in_llama_cpp_shape(
    gateway_url: str, personal_key: Key, backend: ScriptedBackend
) -> None:
    body = {
        "input_prefix": "def area(radius):\n",
        "prompt": "    return ",
        "input_suffix": SUFFIX,
        "input_extra": [{"filename": "geometry/const.py", "text": "PI = 3.14159\n"}],
        "n_predict": 48,
        "stream": False,
        "cache_prompt": True,
        "t_max_predict_ms": 1000,
    }
    response = post(gateway_url, "/infill", personal_key, body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["content"] == ANSWER and answer["stop"] is True
    assert answer["timings"]["predicted_n"] > 0
    assert sent_prompt(backend) == fim.render(FimFamily.STARCODER, PREFIX, SUFFIX)
    assert backend.requests[-1].max_tokens <= 48
    streamed = post(gateway_url, "/infill", personal_key, {**body, "stream": True})
    chunks = events(streamed)
    assert "".join(c["content"] for c in chunks) == ANSWER
    assert chunks[-1]["stop"] is True and all(not c["stop"] for c in chunks[:-1])
    assert "[DONE]" not in streamed.text
    bad = post(gateway_url, "/infill", personal_key, {**body, "n_predict": "lots"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "n_predict"
    # llama.vscode warms the server's cache with n_predict 0: answered empty, nothing generated.
    served = len(backend.requests)
    warm = post(gateway_url, "/infill", personal_key, {**body, "n_predict": 0})
    assert warm.status_code == 200 and warm.json()["content"] == ""
    assert len(backend.requests) == served
    # Compact JSON: llama.vim only reads a body matching '"content":"'.
    assert '"content":"' in response.text


def test_tgi_generate_with_a_rendered_prompt(
    gateway_url: str, personal_key: Key, backend: ScriptedBackend
) -> None:
    inputs = fim.render(FimFamily.CODELLAMA, PREFIX, SUFFIX)
    response = post(
        gateway_url,
        "/generate",
        personal_key,
        {
            "inputs": inputs,
            "parameters": {
                "max_new_tokens": 60,
                "temperature": 0.2,
                "do_sample": True,
                "top_p": 0.95,
                "stop": ["<EOT>"],
                "return_full_text": False,
            },
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["generated_text"] == ANSWER
    # Split back from CodeLlama's template, rendered again in the arm's (StarCoder's).
    assert sent_prompt(backend) == fim.render(FimFamily.STARCODER, PREFIX, SUFFIX)
    missing = post(gateway_url, "/generate", personal_key, {"parameters": {}})
    assert missing.status_code == 400
    # TGI's error shape: llm-ls reads ``error`` as a string.
    assert missing.json() == {"error": "inputs is required", "error_type": "invalid_request_error"}


def test_unknown_paths_answer_in_the_error_shape(gateway_url: str, personal_key: Key) -> None:
    response = httpx.post(f"{gateway_url}/v1/chat/nothing", headers=personal_key.headers)
    assert response.status_code == 404
    assert response.json()["error"]["message"].startswith("POST /v1/chat/nothing")
