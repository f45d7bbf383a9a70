"""The vLLM backend: a vLLM OpenAI server over HTTP, or (optionally) an in-process AsyncLLM.

The gateway renders the fill-in-the-middle prompt itself and never sends ``suffix`` (vLLM
rejects it for nearly every model); ``model`` is the arm's LoRA adapter name when it has one,
else its base model, and every decoding parameter is sent explicitly. Only this module imports
vllm, and only for the in-process engine, lazily.
"""

from __future__ import annotations

import importlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import httpx

from serving.backend import (
    BackendError,
    BackendUnavailable,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    GenerationResult,
    UnknownModel,
)

DEFAULT_RETRY_AFTER_S = 1.0


def _finish(reason: object) -> FinishReason:
    return "length" if reason == "length" else "stop"


def _body(request: GenerationRequest, *, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": request.adapter or request.model,
        "prompt": request.prompt,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "stop": list(request.stop),
        "n": 1,
        "stream": stream,
        # vLLM extensions: FIM markers are special tokens; keep them in the text so the stop
        # strings match, and never let generation_config override what the arm pinned.
        "skip_special_tokens": False,
        "include_stop_str_in_output": False,
    }
    if request.seed is not None:
        body["seed"] = request.seed
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.1, float(response.headers.get("retry-after", DEFAULT_RETRY_AFTER_S)))
    except ValueError:
        return DEFAULT_RETRY_AFTER_S


def _raise_for(response: httpx.Response, model: str) -> None:
    if response.status_code == 200:
        return
    text = response.text[:500]
    if response.status_code in (429, 502, 503, 504):
        raise BackendUnavailable(
            f"vLLM answered {response.status_code}: {text}", retry_after_s=_retry_after(response)
        )
    if response.status_code == 404 or "does not exist" in text:
        raise UnknownModel(f"vLLM does not serve {model!r}: {text}")
    raise BackendError(f"vLLM answered {response.status_code}: {text}")


class VllmBackend:
    """One vLLM OpenAI server (one deployment per base model, LoRA arms by ``model``)."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "vllm",
        models: Sequence[str] = (),
        api_key: str | None = None,
        timeout_s: float = 30.0,
        max_connections: int = 256,
        chars_per_token: float = 3.5,
        count_tokens: Callable[[str], int] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.url = url.rstrip("/")
        self.models = tuple(models)
        self._chars_per_token = chars_per_token
        self._count = count_tokens
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=timeout_s,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            transport=transport,
        )

    def serves(self, model: str) -> bool:
        """Whether this server answers for ``model`` (a base model or an adapter name)."""
        return not self.models or model in self.models

    @property
    def context_length(self) -> int | None:
        """None: the vLLM server enforces its own --max-model-len."""
        return None

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text``: the given tokenizer's count, else an estimate from its length."""
        if self._count is not None:
            return self._count(text)
        return int(len(text) / self._chars_per_token) + 1

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """The whole completion from ``/v1/completions``."""
        started = time.perf_counter()
        model = request.adapter or request.model
        try:
            response = await self._client.post("/v1/completions", json=_body(request, stream=False))
        except (httpx.TimeoutException, httpx.NetworkError) as exc:
            raise BackendUnavailable(f"vLLM at {self.url} unreachable: {exc!r}") from exc
        _raise_for(response, model)
        data = response.json()
        choice = data["choices"][0]
        usage = data.get("usage") or {}
        return GenerationResult(
            text=choice.get("text") or "",
            finish_reason=_finish(choice.get("finish_reason")),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            backend_ms=(time.perf_counter() - started) * 1000,
        )

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """The completion from ``/v1/completions`` with ``stream: true`` (server-sent events)."""
        model = request.adapter or request.model
        finish: FinishReason | None = None
        prompt_tokens = completion_tokens = 0
        try:
            async with self._client.stream(
                "POST", "/v1/completions", json=_body(request, stream=True)
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    _raise_for(response, model)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    data = json.loads(payload)
                    if "error" in data:
                        raise BackendError(f"vLLM stream error: {data['error']}")
                    usage = data.get("usage") or {}
                    prompt_tokens = int(usage.get("prompt_tokens", prompt_tokens))
                    completion_tokens = int(usage.get("completion_tokens", completion_tokens))
                    for choice in data.get("choices") or ():
                        if choice.get("finish_reason"):
                            finish = _finish(choice["finish_reason"])
                        if choice.get("text"):
                            yield GenerationChunk(text=choice["text"])
        except (httpx.TimeoutException, httpx.NetworkError) as exc:
            raise BackendUnavailable(f"vLLM at {self.url} unreachable: {exc!r}") from exc
        yield GenerationChunk(
            text="",
            finish_reason=finish or "stop",
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


class VllmRouter:
    """Several vLLM servers (one per base model) behind one backend, chosen by model name."""

    def __init__(self, servers: Sequence[VllmBackend], *, name: str = "vllm") -> None:
        if not servers:
            raise ValueError("a vLLM router needs at least one server")
        self.name = name
        self.servers = tuple(servers)

    def _server(self, request: GenerationRequest) -> VllmBackend:
        for server in self.servers:
            if server.serves(request.adapter or request.model) or server.serves(request.model):
                return server
        raise UnknownModel(f"no vLLM server is configured for {request.model!r}")

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """The whole completion from the server of the request's model."""
        return await self._server(request).generate(request)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """The completion, streamed from the server of the request's model."""
        async for chunk in self._server(request).stream(request):
            yield chunk

    @property
    def context_length(self) -> int | None:
        """None: the vLLM servers enforce their own --max-model-len."""
        return None

    def count_tokens(self, text: str) -> int:
        """The first server's count (servers of one gateway share a tokenizer family)."""
        return self.servers[0].count_tokens(text)

    async def aclose(self) -> None:
        """Close every server's connections."""
        for server in self.servers:
            await server.aclose()


class InProcessVllm:
    """vLLM's AsyncLLM in this process (needs ``pip install .[gpu]`` and a GPU).

    vllm is imported here, lazily, so nothing else in the project depends on it.
    """

    def __init__(
        self,
        model: str,
        *,
        name: str = "vllm",
        lora_modules: Mapping[str, str] | None = None,
        max_lora_rank: int = 16,
        **engine_args: Any,
    ) -> None:
        vllm: Any = importlib.import_module("vllm")
        async_llm: Any = importlib.import_module("vllm.v1.engine.async_llm")
        self.name = name
        self.model = model
        self._vllm = vllm
        self._loras = dict(lora_modules or {})
        args = vllm.AsyncEngineArgs(
            model=model,
            enable_lora=bool(self._loras),
            max_loras=max(1, len(self._loras)),
            max_lora_rank=max_lora_rank,
            generation_config="vllm",
            **engine_args,
        )
        self._engine = async_llm.AsyncLLM.from_engine_args(args)
        self._tokenizer: Any = None
        self._lora_ids = {adapter: i + 1 for i, adapter in enumerate(self._loras)}

    @property
    def context_length(self) -> int | None:
        """None: the engine enforces its own max_model_len."""
        return None

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in the served model's tokenizer."""
        if self._tokenizer is None:
            transformers: Any = importlib.import_module("transformers")
            self._tokenizer = transformers.AutoTokenizer.from_pretrained(self.model)
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def _params(self, request: GenerationRequest) -> tuple[Any, Any]:
        if request.model != self.model:
            raise UnknownModel(f"this engine serves {self.model!r}, not {request.model!r}")
        lora = None
        if request.adapter is not None:
            if request.adapter not in self._loras:
                raise UnknownModel(f"adapter {request.adapter!r} is not loaded")
            lora_module: Any = importlib.import_module("vllm.lora.request")
            lora = lora_module.LoRARequest(
                request.adapter, self._lora_ids[request.adapter], self._loras[request.adapter]
            )
        params = self._vllm.SamplingParams(
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop=list(request.stop),
            seed=request.seed,
            skip_special_tokens=False,
        )
        return params, lora

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """The completion as AsyncLLM produces it (cancelling the consumer aborts the request)."""
        params, lora = self._params(request)
        sent = 0
        final: Any = None
        async for output in self._engine.generate(
            request.prompt, params, request_id=uuid.uuid4().hex, lora_request=lora
        ):
            final = output
            text = output.outputs[0].text
            if len(text) > sent:
                yield GenerationChunk(text=text[sent:])
                sent = len(text)
        completion = final.outputs[0] if final is not None else None
        yield GenerationChunk(
            text="",
            finish_reason=_finish(completion.finish_reason if completion else "stop"),
            prompt_tokens=len(final.prompt_token_ids or ()) if final is not None else 0,
            completion_tokens=len(completion.token_ids) if completion else 0,
        )

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """The whole completion."""
        started = time.perf_counter()
        pieces: list[str] = []
        last = GenerationChunk(text="", finish_reason="stop")
        async for chunk in self.stream(request):
            pieces.append(chunk.text)
            last = chunk
        return GenerationResult(
            text="".join(pieces),
            finish_reason=last.finish_reason or "stop",
            prompt_tokens=last.prompt_tokens,
            completion_tokens=last.completion_tokens,
            backend_ms=(time.perf_counter() - started) * 1000,
        )

    async def aclose(self) -> None:
        """Shut the engine down."""
        self._engine.shutdown()
