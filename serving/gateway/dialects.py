"""The request bodies and response shapes of real IDE clients, mapped onto one completion path.

Every client speaks a slightly different API, and each is served by the same
``CompletionService``: a dialect parses its client's body into a ``CompletionRequest`` (400s
name the client's own field) and reshapes the OpenAI-style result into what that client reads.

- ``openai``, ``POST /v1/completions``: the openai SDK, Continue (legacy completions), Tabby's
  and llm-ls's OpenAI backends;
- ``tabby``, ``POST /v1/completions`` with ``segments``: Tabby's IDE extensions (native API);
- ``fim``, ``POST /v1/fim/completions``: Continue with Mistral/Codestral-style FIM;
- ``infill``, ``POST /infill``: llama.vscode and llama.vim (llama.cpp server's API);
- ``tgi``, ``POST /generate``: llm-ls (llm-vscode, llm.nvim) with its TGI backend.

Streams are reshaped chunk by chunk from the OpenAI server-sent events the service makes.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from serving.gateway.client_bodies import (
    FimCompletion,
    InfillRequest,
    TabbyCompletion,
    TgiGenerate,
)
from serving.gateway.errors import GatewayError, from_validation_error
from serving.gateway.protocol import CompletionRequest

Shape = Callable[[dict[str, Any]], dict[str, Any]]


@dataclasses.dataclass(frozen=True, slots=True)
class Dialect:
    """How one client family's body becomes a request, and a result its response."""

    name: str
    parse: Callable[[bytes], CompletionRequest | GatewayError]
    # The non-streamed response body, from the OpenAI-style result.
    shape: Shape
    # One streamed chunk's body, from the OpenAI-style chunk; None drops the chunk.
    shape_chunk: Callable[[dict[str, Any]], dict[str, Any] | None]
    # What ends a stream after the last chunk (OpenAI's ``[DONE]``, or nothing).
    done: bytes = b"data: [DONE]\n\n"
    # The error body, from OpenAI's; None keeps OpenAI's ``{"error": {...}}``.
    shape_error: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # Whether a request only warms the server's cache (llama.vscode's ``n_predict: 0``): it is
    # answered empty, generates nothing and logs no completion.
    warmup: Callable[[CompletionRequest, bytes], bool] | None = None

    def encode(self, body: dict[str, Any]) -> bytes:
        """A response body as bytes: compact, which llama.vim's reader needs."""
        return json.dumps(body, separators=(",", ":")).encode()


Body = TypeVar("Body", bound=BaseModel)


def _validate(model: type[Body], raw: bytes) -> Body | GatewayError:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        return from_validation_error(exc)


def _parser(
    model: type[Body], fields: Callable[[Body], dict[str, Any]]
) -> Callable[[bytes], CompletionRequest | GatewayError]:
    """Parse a body with ``model`` (errors name its fields), then map ``fields`` onto the core
    request; None values are left out, so the core request's defaults apply."""

    def parse(raw: bytes) -> CompletionRequest | GatewayError:
        body = _validate(model, raw)
        if isinstance(body, GatewayError):
            return body
        values = {k: v for k, v in fields(body).items() if v is not None}
        return _request(values, body.model_extra)

    return parse


# Where clients write the file a prompt is about: Continue's "+++++ path" context headers (the
# last one is the file being edited), StarCoder's "<filename>path" and StarCoder2's
# "<file_sep>path" lines, Continue's "# Path: path" snippet headers.
_PATH_MARKERS = (
    re.compile(r"^\+\+\+\+\+ (\S+)", re.MULTILINE),
    re.compile(r"<(?:filename|file_sep)>([^\s<]+)"),
    re.compile(r"(?:^|>)(?://|#) Path: (\S+)", re.MULTILINE),
)


def path_in_prompt(prompt: str) -> str | None:
    """The file a prompt names, for clients that send no path (its language comes from it)."""
    head = prompt[:20_000]
    for marker in _PATH_MARKERS:
        found = marker.findall(head)
        if found:
            return str(found[-1])
    return None


def _with_path(request: CompletionRequest) -> CompletionRequest:
    if request.filepath is not None or request.language is not None:
        return request
    path = path_in_prompt(request.prompt_text)
    return request if path is None else request.model_copy(update={"filepath": path[:4096]})


def _request(
    fields: dict[str, Any], extra: dict[str, Any] | None
) -> CompletionRequest | GatewayError:
    """The core request from a dialect's fields (CodeLift's own fields pass through)."""
    passthrough = {k: v for k, v in (extra or {}).items() if k in _CODELIFT_FIELDS}
    try:
        return _with_path(CompletionRequest.model_validate({**passthrough, **fields}))
    except ValidationError as exc:
        return from_validation_error(exc)


# Fields of CompletionRequest a client of another dialect may also send (the openai SDK's
# ``extra_body`` style): who asks, where, with what.
_CODELIFT_FIELDS = frozenset(
    {"user", "language", "filepath", "trigger", "session_id", "ide", "org", "plugin_version"}
)


def _first_choice(result: dict[str, Any]) -> dict[str, Any]:
    choices = result.get("choices") or [{}]
    first: dict[str, Any] = choices[0]
    return first


# --- openai -------------------------------------------------------------------------------------


def _parse_openai(raw: bytes) -> CompletionRequest | GatewayError:
    try:
        return _with_path(CompletionRequest.model_validate_json(raw))
    except ValidationError as exc:
        return from_validation_error(exc)


def _same(body: dict[str, Any]) -> dict[str, Any]:
    return body


OPENAI = Dialect("openai", _parse_openai, _same, _same)


# --- tabby (native) -----------------------------------------------------------------------------


def is_tabby(raw: bytes) -> bool:
    """Whether a ``/v1/completions`` body is Tabby's native one (``segments``, no ``prompt``)."""
    # A cheap look before a full parse: the OpenAI body is by far the common one.
    if b'"segments"' not in raw:
        return False
    try:
        body = json.loads(raw)
    except ValueError:
        return False
    return isinstance(body, dict) and "segments" in body and "prompt" not in body


def _tabby_fields(body: TabbyCompletion) -> dict[str, Any]:
    segments = body.segments
    return {
        "prompt": segments.prefix,
        "suffix": segments.suffix or "",
        "filepath": segments.filepath,
        "language": body.language,
        "user": body.user,
        "temperature": body.temperature,
        "ide": "tabby",
    }


def _shape_tabby(result: dict[str, Any]) -> dict[str, Any]:
    """Tabby reads ``id`` (it reports its events with it) and ``choices[].text``."""
    return {
        "id": result["id"],
        "choices": [{"index": c["index"], "text": c["text"]} for c in result["choices"]],
        "codelift": result.get("codelift"),
    }


TABBY = Dialect("tabby", _parser(TabbyCompletion, _tabby_fields), _shape_tabby, _shape_tabby)


# --- fim (Mistral / Codestral style) ------------------------------------------------------------


def _fim_fields(body: FimCompletion) -> dict[str, Any]:
    return {
        "model": body.model,
        "prompt": body.prompt,
        # The suffix is given apart: never read as a rendered template.
        "suffix": body.suffix or "",
        "max_tokens": body.max_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "stop": body.stop,
        "stream": body.stream,
    }


def _shape_fim(result: dict[str, Any]) -> dict[str, Any]:
    """Mistral's answer: a chat-style message per choice."""
    return {
        "id": result["id"],
        "object": "chat.completion",
        "created": result["created"],
        "model": result["model"],
        "choices": [
            {
                "index": c["index"],
                "message": {"role": "assistant", "content": c["text"]},
                "finish_reason": c["finish_reason"],
            }
            for c in result["choices"]
        ],
        "usage": result.get("usage"),
        "codelift": result.get("codelift"),
    }


def _shape_fim_chunk(chunk: dict[str, Any]) -> dict[str, Any] | None:
    if not chunk.get("choices"):
        return {**chunk, "object": "chat.completion.chunk"}  # the usage chunk
    return {
        "id": chunk["id"],
        "object": "chat.completion.chunk",
        "created": chunk["created"],
        "model": chunk["model"],
        "choices": [
            {
                "index": c["index"],
                "delta": {"content": c["text"]},
                "finish_reason": c["finish_reason"],
            }
            for c in chunk["choices"]
        ],
        **({"codelift": chunk["codelift"]} if "codelift" in chunk else {}),
    }


FIM = Dialect("fim", _parser(FimCompletion, _fim_fields), _shape_fim, _shape_fim_chunk)


# --- infill (llama.cpp server) ------------------------------------------------------------------


def _infill_fields(body: InfillRequest) -> dict[str, Any]:
    max_tokens = body.n_predict if body.n_predict is not None and body.n_predict > 0 else None
    return {
        "prompt": body.input_prefix + body.prompt,
        "suffix": body.input_suffix,
        "max_tokens": max_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "stop": body.stop,
        "stream": body.stream,
        "ide": "llama.vscode",
    }


def _timings(usage: dict[str, Any] | None) -> dict[str, Any]:
    usage = usage or {}
    return {
        "prompt_n": usage.get("prompt_tokens", 0),
        "predicted_n": usage.get("completion_tokens", 0),
    }


def _infill_warmup(request: CompletionRequest, raw: bytes) -> bool:
    try:
        body = json.loads(raw)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("n_predict") == 0


def _tgi_error(body: dict[str, Any]) -> dict[str, Any]:
    """TGI's error body: llm-ls reads ``error`` as a string (an object fails to parse)."""
    error = body.get("error") or {}
    return {"error": str(error.get("message", "")), "error_type": str(error.get("type", ""))}


def _shape_infill(result: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp's answer: ``content``, whether it stopped, and token counts."""
    first = _first_choice(result)
    usage = result.get("usage") or {}
    return {
        "index": 0,
        "content": first.get("text", ""),
        "stop": True,
        "stop_type": "limit" if first.get("finish_reason") == "length" else "eos",
        "model": result.get("model"),
        # llama.vscode's status bar reads generation_settings.n_ctx without a guard.
        "generation_settings": {"n_ctx": 0, "n_predict": usage.get("completion_tokens", 0)},
        "stopped_limit": first.get("finish_reason") == "length",
        "stopped_eos": first.get("finish_reason") == "stop",
        "tokens_predicted": usage.get("completion_tokens", 0),
        "tokens_evaluated": usage.get("prompt_tokens", 0),
        "tokens_cached": 0,
        "truncated": False,
        "timings": _timings(usage),
        "codelift": result.get("codelift"),
    }


def _shape_infill_chunk(chunk: dict[str, Any]) -> dict[str, Any] | None:
    if not chunk.get("choices"):
        return None  # the usage chunk: llama.cpp has none
    first = _first_choice(chunk)
    finished = first.get("finish_reason") is not None
    body: dict[str, Any] = {"content": first.get("text", ""), "stop": finished}
    if finished:
        body["stopped_limit"] = first.get("finish_reason") == "length"
        body["codelift"] = chunk.get("codelift")
    return body


INFILL = Dialect(
    "infill",
    _parser(InfillRequest, _infill_fields),
    _shape_infill,
    _shape_infill_chunk,
    done=b"",
    warmup=_infill_warmup,
)


# --- tgi (text-generation-inference) ------------------------------------------------------------


def _tgi_fields(body: TgiGenerate) -> dict[str, Any]:
    parameters = body.parameters
    return {
        "prompt": body.inputs,
        "max_tokens": parameters.max_new_tokens,
        "temperature": parameters.temperature,
        "top_p": parameters.top_p,
        "stop": parameters.stop,
        "ide": "llm-ls",
    }


def _shape_tgi(result: dict[str, Any]) -> dict[str, Any]:
    first = _first_choice(result)
    return {
        "generated_text": first.get("text", ""),
        "details": {
            "finish_reason": "length" if first.get("finish_reason") == "length" else "eos_token",
            "generated_tokens": (result.get("usage") or {}).get("completion_tokens", 0),
        },
        "codelift": result.get("codelift"),
    }


TGI = Dialect(
    "tgi",
    _parser(TgiGenerate, _tgi_fields),
    _shape_tgi,
    lambda chunk: chunk,
    shape_error=_tgi_error,
)


async def reshape_stream(dialect: Dialect, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The service's OpenAI server-sent events in ``dialect``'s shape."""
    async for event in events:
        if dialect is OPENAI or not event.startswith(b"data: "):
            yield event
            continue
        data = event[len(b"data: ") :].strip()
        if data == b"[DONE]":
            if dialect.done:
                yield dialect.done
            continue
        chunk = json.loads(data)
        if "error" in chunk:
            yield event
            continue
        shaped = dialect.shape_chunk(chunk)
        if shaped is not None:
            yield b"data: " + dialect.encode(shaped) + b"\n\n"


def warmup_body(dialect: Dialect) -> dict[str, Any]:
    """The empty answer to a warm-up request, in the dialect's shape."""
    return dialect.shape(
        {
            "id": "warmup",
            "created": 0,
            "model": "",
            "choices": [{"index": 0, "text": "", "finish_reason": "length"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }
    )
