"""The vLLM backend against a stand-in vLLM OpenAI server over real HTTP, the ``vllm serve``
command lines, and (with the ``gpu`` marker) the in-process engine on a real GPU."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from experiments.variants import Variant
from serving.backend import BackendError, BackendUnavailable, GenerationRequest, UnknownModel
from serving.gateway.server import running
from serving.vllm_backend import VllmBackend, VllmRouter
from serving.vllm_command import deployments, render
from tests.experiment_factories import arm, definition
from tests.fake_vllm import fake_vllm

REQUEST = GenerationRequest(
    prompt="<fim_prefix>def f():\n<fim_suffix>\n<fim_middle>",
    model="bigcode/starcoder2-3b",
    adapter="py-lora",
    max_tokens=16,
    temperature=0.2,
    top_p=0.95,
    stop=("<fim_prefix>", "\n\n"),
    seed=7,
)


@pytest.fixture(scope="module")
def vllm_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    app, seen = fake_vllm()
    with running(app) as url:
        yield url, seen


def test_generate_sends_the_rendered_prompt_and_every_decoding_parameter(
    vllm_server: tuple[str, list[dict[str, Any]]],
) -> None:
    url, seen = vllm_server

    async def go() -> None:
        backend = VllmBackend(url)
        try:
            result = await backend.generate(REQUEST)
        finally:
            await backend.aclose()
        assert (result.text, result.finish_reason) == ("    return 1", "stop")
        assert (result.prompt_tokens, result.completion_tokens) == (9, 3)
        assert result.backend_ms > 0

    asyncio.run(go())
    body = seen[-1]
    assert "suffix" not in body
    assert body["model"] == "py-lora"
    assert body["prompt"] == REQUEST.prompt
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["seed"]) == (
        16,
        0.2,
        0.95,
        7,
    )
    assert body["stop"] == ["<fim_prefix>", "\n\n"] and body["stream"] is False


def test_stream_parses_server_sent_events(vllm_server: tuple[str, list[dict[str, Any]]]) -> None:
    url, _ = vllm_server

    async def go() -> list[Any]:
        backend = VllmBackend(url)
        try:
            return [chunk async for chunk in backend.stream(REQUEST)]
        finally:
            await backend.aclose()

    chunks = asyncio.run(go())
    assert "".join(c.text for c in chunks) == "    return 1"
    assert chunks[-1].finish_reason == "length"
    assert (chunks[-1].prompt_tokens, chunks[-1].completion_tokens) == (9, 3)


@pytest.mark.parametrize(
    ("adapter", "error"),
    [("overloaded", BackendUnavailable), ("missing", UnknownModel), ("broken", BackendError)],
)
def test_errors_map_to_backend_errors(
    vllm_server: tuple[str, list[dict[str, Any]]], adapter: str, error: type[Exception]
) -> None:
    url, _ = vllm_server
    request = GenerationRequest(**{**_fields(REQUEST), "adapter": adapter})

    async def go() -> None:
        backend = VllmBackend(url)
        try:
            with pytest.raises(error) as caught:
                await backend.generate(request)
            if isinstance(caught.value, BackendUnavailable):
                assert caught.value.retry_after_s == 4.0
            with pytest.raises(error):
                async for _ in backend.stream(request):
                    pass
        finally:
            await backend.aclose()

    asyncio.run(go())


def _fields(request: GenerationRequest) -> dict[str, Any]:
    return {name: getattr(request, name) for name in request.__dataclass_fields__}


def test_an_unreachable_server_is_unavailable() -> None:
    async def go() -> None:
        backend = VllmBackend("http://127.0.0.1:1", timeout_s=2)
        try:
            with pytest.raises(BackendUnavailable):
                await backend.generate(REQUEST)
        finally:
            await backend.aclose()

    asyncio.run(go())


def test_the_router_picks_the_server_of_the_model(
    vllm_server: tuple[str, list[dict[str, Any]]],
) -> None:
    url, seen = vllm_server

    async def go() -> None:
        router = VllmRouter(
            [
                VllmBackend("http://127.0.0.1:1", models=("other/model",)),
                VllmBackend(url, models=("bigcode/starcoder2-3b", "py-lora")),
            ]
        )
        try:
            assert (await router.generate(REQUEST)).text == "    return 1"
            with pytest.raises(UnknownModel):
                await router.generate(
                    GenerationRequest(**{**_fields(REQUEST), "model": "x/y", "adapter": None})
                )
        finally:
            await router.aclose()

    asyncio.run(go())


EXPERIMENT = definition(
    "lora-python",
    arms=[
        arm("control", 0.4, backend="vllm", model="Qwen/Qwen2.5-Coder-1.5B"),
        arm("tuned", 0.4, backend="vllm", model="Qwen/Qwen2.5-Coder-1.5B", adapter="py-tuned"),
        arm("small", 0.2, backend="local"),
    ],
)
DEFAULT = Variant(model="codelift-fim-small", fim_template="qwen2.5-coder")


def test_arms_are_grouped_by_base_model() -> None:
    [deployment] = deployments(EXPERIMENT, DEFAULT, adapter_paths={"py-tuned": "/lora/py"})
    assert deployment.model == "Qwen/Qwen2.5-Coder-1.5B"
    assert deployment.arms == ("control", "tuned")
    assert deployment.argv(max_lora_rank=32) == [
        "vllm",
        "serve",
        "Qwen/Qwen2.5-Coder-1.5B",
        "--port",
        "8000",
        "--generation-config",
        "vllm",
        "--max-model-len",
        str(2048 + 64 + 16),
        "--enable-lora",
        "--lora-modules",
        "py-tuned=/lora/py",
        "--max-loras",
        "1",
        "--max-lora-rank",
        "32",
    ]
    assert [d.model for d in deployments(EXPERIMENT, DEFAULT, include_local=True)] == [
        "Qwen/Qwen2.5-Coder-1.5B",
        "codelift-fim-small",
    ]


def test_rendered_script() -> None:
    script = render(EXPERIMENT, DEFAULT, adapter_dir="/adapters")
    assert "vllm serve Qwen/Qwen2.5-Coder-1.5B \\\n    --port 8000 \\\n" in script
    assert "--lora-modules py-tuned=/adapters/py-tuned" in script
    assert "--generation-config vllm" in script
    assert "codelift_gateway_latency_seconds" in script
    gateway_line = script.splitlines()[-1]
    servers = json.loads(gateway_line.split("CODELIFT_GATEWAY_VLLM='")[1].rstrip("'"))
    assert servers == [
        {"url": "http://127.0.0.1:8000", "models": ["Qwen/Qwen2.5-Coder-1.5B", "py-tuned"]}
    ]
    none = render(definition("local-only"), DEFAULT)
    assert "no arm of this experiment is served by vLLM" in none


def _gpu_and_vllm() -> bool:
    return importlib.util.find_spec("vllm") is not None and shutil.which("nvidia-smi") is not None


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_and_vllm(), reason="needs vLLM (pip install .[gpu]) and a GPU")
def test_in_process_vllm_engine_completes() -> None:
    from serving.vllm_backend import InProcessVllm

    model = os.environ.get("CODELIFT_VLLM_TEST_MODEL", "bigcode/tiny_starcoder_py")

    async def go() -> None:
        engine = InProcessVllm(model, gpu_memory_utilization=0.3, max_model_len=1024)
        try:
            request = GenerationRequest(
                prompt="<fim_prefix>def add(a, b):\n    return <fim_suffix>\n<fim_middle>",
                model=model,
                adapter=None,
                max_tokens=8,
                temperature=0.0,
                top_p=1.0,
                stop=("<fim_prefix>", "<|endoftext|>"),
            )
            result = await engine.generate(request)
            assert result.completion_tokens > 0
            streamed = "".join([c.text async for c in engine.stream(request)])
            assert streamed == result.text
        finally:
            await engine.aclose()

    asyncio.run(go())
