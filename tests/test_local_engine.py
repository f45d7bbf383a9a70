"""The local FIM engine: tokenizer, KV cache, batching, decoding controls, cancellation, overload.

Engine mechanics run on a tiny random-weight model saved and loaded through the real checkpoint
functions (fast and independent of training); the committed checkpoint is checked for size and
for a plausible completion.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import dataclasses
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import openai
import pytest
import torch
import uvicorn
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.backend import (
    BackendError,
    BackendUnavailable,
    GenerationChunk,
    GenerationRequest,
    UnknownModel,
)
from serving.local import tokenizer
from serving.local.engine import DEFAULT_CHECKPOINT, LocalEngine
from serving.local.model import (
    WEIGHTS_FILE,
    FimTransformer,
    KVCache,
    ModelConfig,
    load_checkpoint,
    save_checkpoint,
)
from serving.local.server import create_app

T = TypeVar("T")

# A long context, so that a request of unlimited max_tokens runs long enough (hundreds of ms)
# for the cancellation and overload tests to act while it is running.
TINY = ModelConfig(d_model=64, n_layers=2, n_heads=2, d_ff=128, context=2048)
TINY_NAME = "tiny-test"
CHECKPOINT_LIMIT_BYTES = 20 * 1024 * 1024


def _tiny_model() -> FimTransformer:
    torch.manual_seed(0)
    model = FimTransformer(TINY)
    with torch.no_grad():
        # Sharper logits than at initialisation, so greedy choices are far from ties, and
        # sentinels never win: sequences then run to max_tokens unless a stop string ends them.
        model.embed.weight.mul_(40.0)
        model.embed.weight[tokenizer.BYTE_VOCAB :] = 0.0
    return model.eval()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight model written by ``save_checkpoint``."""
    directory = tmp_path_factory.mktemp("tiny")
    save_checkpoint(_tiny_model(), directory, name=TINY_NAME)
    return directory


def _run(scenario: Callable[[LocalEngine], Awaitable[T]], path: Path, **kwargs: Any) -> T:
    async def main() -> T:
        engine = LocalEngine.load(path, **kwargs)
        try:
            return await scenario(engine)
        finally:
            await engine.aclose()

    return asyncio.run(main())


def _request(prompt: str, **overrides: object) -> GenerationRequest:
    fields: dict[str, object] = {
        "prompt": prompt,
        "model": TINY_NAME,
        "adapter": None,
        "max_tokens": 16,
        "temperature": 0.0,
        "top_p": 1.0,
        "stop": (),
    }
    fields.update(overrides)
    return GenerationRequest(**fields)  # type: ignore[arg-type]


async def _wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


# -- tokenizer ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "def f(x):\n    return x\n", "naïve café € 😀", "\t\r\n"])
def test_tokenizer_round_trips(text: str) -> None:
    ids = tokenizer.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert tokenizer.decode(ids) == text
    assert tokenizer.count(text) == len(text.encode("utf-8"))


def test_starcoder_template_sentinels_are_single_tokens() -> None:
    prompt = "<fim_prefix>a = <fim_suffix>\nprint(a)<fim_middle>"
    ids = tokenizer.encode(prompt)
    assert ids[0] == tokenizer.FIM_PREFIX_ID
    assert ids.count(tokenizer.FIM_SUFFIX_ID) == 1
    assert ids[-1] == tokenizer.FIM_MIDDLE_ID
    assert len(ids) == 3 + len("a = \nprint(a)")
    assert tokenizer.decode(ids) == prompt
    for token in tokenizer.SPECIAL_TOKENS:
        assert tokenizer.encode(token) == [tokenizer.SPECIAL_IDS[token]]
    assert tokenizer.encode("<|endoftext|>")[0] == tokenizer.EOT_ID
    assert tokenizer.encode("<fim_prefix") == list(b"<fim_prefix")


def test_stream_decoder_emits_whole_characters_and_replaces_a_broken_tail() -> None:
    text = "é€😀x"
    decoder = tokenizer.StreamDecoder()
    pieces = [decoder.push(b) for b in text.encode("utf-8")]
    assert "".join(pieces) == text
    assert all(p in ("", "é", "€", "😀", "x") for p in pieces)
    # A stream cut inside a character ends with U+FFFD, as does an invalid byte.
    assert tokenizer.decode(list("😀".encode())[:2]) == "\ufffd"
    assert tokenizer.decode([0xFF, ord("a")]) == "\ufffda"


CODE_SAMPLES = [
    b"def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n",
    b"for (int i = 0; i < n; i++) {\n    total += values[i];\n}\n",
    b"const result = items.map((item) => item.value);\nexport default result;\n",
] * 20


@pytest.fixture(scope="module")
def bpe() -> tokenizer.Tokenizer:
    return tokenizer.Tokenizer(tokenizer.learn_merges(CODE_SAMPLES, 60))


def test_learned_merges_compress_code_and_round_trip(bpe: tokenizer.Tokenizer) -> None:
    assert len(bpe.merges) == 60 and bpe.vocab_size == 328
    # Learning is deterministic.
    assert bpe.merges == tokenizer.learn_merges(CODE_SAMPLES, 60)
    text = "def add(a, b):\n    return a + b\n"
    ids = bpe.encode(text)
    assert len(ids) < len(text) / 2
    assert bpe.decode(ids) == text
    # Merges stay inside pieces: a newline is always a token of its own.
    assert [bpe.token_bytes(i) for i in ids].count(b"\n") == text.count("\n")
    restored = tokenizer.Tokenizer.from_json(bpe.to_json())
    assert restored.merges == bpe.merges and restored.encode(text) == ids


@given(st.text(max_size=200))
@settings(max_examples=60, deadline=None)
def test_learned_tokenizer_round_trips_any_text(text: str) -> None:
    bpe = tokenizer.Tokenizer(tokenizer.learn_merges(CODE_SAMPLES[:3], 40))
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    assert bpe.count(text) == len(ids)


def test_learned_tokenizer_keeps_sentinels_single(bpe: tokenizer.Tokenizer) -> None:
    prompt = "<fim_prefix>def add(a, b):\n    return <fim_suffix>\n<fim_middle>"
    ids = bpe.encode(prompt)
    assert ids[0] == tokenizer.FIM_PREFIX_ID and ids[-1] == tokenizer.FIM_MIDDLE_ID
    assert ids.count(tokenizer.FIM_SUFFIX_ID) == 1
    assert bpe.decode(ids) == prompt


def test_token_healing_takes_back_the_token_before_the_cursor(bpe: tokenizer.Tokenizer) -> None:
    ids = bpe.encode("<fim_prefix>def add(a, b):\n    return <fim_suffix>\n<fim_middle>")
    healed_ids, healed = bpe.heal(ids)
    assert healed == b" " and len(healed_ids) == len(ids) - 1
    assert (
        bpe.decode(healed_ids) == "<fim_prefix>def add(a, b):\n    return<fim_suffix>\n<fim_middle>"
    )
    # Allowed next: tokens starting with the owed bytes (" b", " +"), none that do not.
    allowed = {bpe.token_bytes(i) for i in bpe.candidates(healed)}
    assert {b" ", b" +", b" b"} <= allowed and not any(b[:1] != b" " for b in allowed)
    # A line start is a token boundary already, and the byte tokenizer never heals.
    assert bpe.heal(bpe.encode("x = 1\n<fim_suffix>")) == (bpe.encode("x = 1\n<fim_suffix>"), b"")
    assert tokenizer.BYTES.heal(tokenizer.encode("return ")) == (tokenizer.encode("return "), b"")


def test_engine_completion_pays_back_the_healed_bytes(
    bpe: tokenizer.Tokenizer, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = FimTransformer(dataclasses.replace(TINY, vocab_size=bpe.vocab_size)).eval()
    save_checkpoint(model, tmp_path, name=TINY_NAME, tok=bpe)
    prompt = "<fim_prefix>def add(a, b):\n    return <fim_suffix>\n<fim_middle>"

    async def scenario(engine: LocalEngine) -> tuple[str, int]:
        result = await engine.generate(_request(prompt, max_tokens=1))
        return result.text, result.prompt_tokens

    text, prompt_tokens = _run(scenario, tmp_path, threads=1)
    assert prompt_tokens == len(bpe.encode(prompt)) - 1
    # The one generated token starts with the owed space, which the text leaves out.
    first = (" " + text).encode()
    assert first in {bpe.token_bytes(i) for i in bpe.candidates(b" ")}


# -- model -------------------------------------------------------------------------------------


@torch.inference_mode()
def test_kv_cache_decoding_matches_full_recompute() -> None:
    model = _tiny_model()
    generator = torch.Generator().manual_seed(1)
    a = torch.randint(0, 256, (40,), generator=generator)
    b = torch.randint(0, 256, (25,), generator=generator)
    full_a, full_b = model(a[None])[0], model(b[None])[0]
    cache = KVCache(TINY, 3)
    # Two sequences of different lengths, b first moved from slot 2 into slot 1 as the engine
    # does when a sequence before it finishes; then both are stepped together.
    last_a = model.prefill(a[:30], cache, 0)
    last_b = model.prefill(b[:15], cache, 2)
    cache.move(2, 1, 15)
    torch.testing.assert_close(last_a, full_a[29], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(last_b, full_b[14], rtol=1e-4, atol=1e-3)
    for step in range(10):
        pa, pb = 30 + step, 15 + step
        logits = model.decode(torch.stack([a[pa], b[pb]]), cache, torch.tensor([pa, pb]))
        torch.testing.assert_close(logits[0], full_a[pa], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(logits[1], full_b[pb], rtol=1e-4, atol=1e-3)


def test_checkpoint_round_trip(tiny_checkpoint: Path) -> None:
    model, name = load_checkpoint(tiny_checkpoint)
    assert name == TINY_NAME
    assert model.config == TINY
    ids = torch.tensor([[tokenizer.FIM_PREFIX_ID, 1, 2, 3]])
    with torch.inference_mode():
        # fp16 on disk: equal to the original up to half-precision rounding.
        torch.testing.assert_close(model(ids), _tiny_model()(ids), rtol=0.05, atol=0.5)


# -- engine ------------------------------------------------------------------------------------

PROMPTS = [
    "<fim_prefix>def add(a, b):\n    return <fim_suffix>\n<fim_middle>",
    "import os\n",
    "x",
    "<fim_prefix>for i in range(<fim_suffix>):\n    pass<fim_middle>",
]


def test_batched_generation_equals_one_at_a_time(tiny_checkpoint: Path) -> None:
    # Different lengths, so that sequences leave the batch mid-way and the others are moved.
    requests = [_request(p, max_tokens=n) for p, n in zip(PROMPTS, (5, 30, 12, 24), strict=True)]

    async def scenario(engine: LocalEngine) -> tuple[list[str], list[str]]:
        alone = [(await engine.generate(r)).text for r in requests]
        together = await asyncio.gather(*(engine.generate(r) for r in requests))
        return alone, [r.text for r in together]

    alone, together = _run(scenario, tiny_checkpoint, max_batch=4)
    assert together == alone
    assert all(alone)


def test_max_tokens_finishes_with_length(tiny_checkpoint: Path) -> None:
    async def scenario(engine: LocalEngine) -> None:
        result = await engine.generate(_request("abc", max_tokens=7))
        assert result.finish_reason == "length"
        assert result.completion_tokens == 7
        assert result.prompt_tokens == 3
        assert result.backend_ms > 0

    _run(scenario, tiny_checkpoint)


def test_stop_string_ends_the_completion_and_is_excluded(tiny_checkpoint: Path) -> None:
    async def scenario(engine: LocalEngine) -> None:
        free = (await engine.generate(_request("import os\n", max_tokens=24))).text
        assert len(free) >= 8
        stop = free[4:7]
        result = await engine.generate(_request("import os\n", max_tokens=24, stop=("zzz", stop)))
        assert result.finish_reason == "stop"
        assert result.text == free[: free.index(stop)]
        assert stop not in result.text

    _run(scenario, tiny_checkpoint)


def test_sampling_is_reproducible_with_a_seed(tiny_checkpoint: Path) -> None:
    async def scenario(engine: LocalEngine) -> None:
        sampled = _request("x = ", temperature=0.9, top_p=0.95, seed=42, max_tokens=20)
        first, second = await asyncio.gather(engine.generate(sampled), engine.generate(sampled))
        assert first.text == second.text
        # A nucleus so small that it holds only the most likely token is greedy decoding.
        narrow = _request("x = ", temperature=1.0, top_p=1e-9, seed=7, max_tokens=20)
        greedy = _request("x = ", max_tokens=20)
        assert (await engine.generate(narrow)).text == (await engine.generate(greedy)).text

    _run(scenario, tiny_checkpoint)


def test_stream_yields_the_text_of_generate(tiny_checkpoint: Path) -> None:
    async def scenario(engine: LocalEngine) -> None:
        for stop in ((), ("\n",), ("ab", "b")):
            request = _request(PROMPTS[0], max_tokens=30, stop=stop)
            whole = await engine.generate(request)
            chunks: list[GenerationChunk] = [c async for c in engine.stream(request)]
            assert "".join(c.text for c in chunks) == whole.text
            assert [c.finish_reason for c in chunks][-1] == whole.finish_reason
            assert all(c.finish_reason is None for c in chunks[:-1])
            assert chunks[-1].completion_tokens == whole.completion_tokens

    _run(scenario, tiny_checkpoint)


def test_cancelling_the_caller_frees_the_slot(tiny_checkpoint: Path) -> None:
    async def scenario(engine: LocalEngine) -> None:
        long = asyncio.create_task(engine.generate(_request("a", max_tokens=100_000)))
        await _wait_for(lambda: engine.stats().running == 1)
        long.cancel()
        with pytest.raises(asyncio.CancelledError):
            await long
        await _wait_for(lambda: engine.stats().running == 0)
        assert engine.stats().cancelled == 1
        # The single slot serves the next request.
        assert (await engine.generate(_request("b", max_tokens=3))).completion_tokens == 3

    _run(scenario, tiny_checkpoint, max_batch=1)


def test_abandoned_stream_leaves_the_batch(tiny_checkpoint: Path) -> None:
    async def scenario(engine: LocalEngine) -> None:
        stream = engine.stream(_request("a", max_tokens=100_000))
        await anext(stream)
        await stream.aclose()  # what an ASGI server does when the client disconnects
        await _wait_for(lambda: engine.stats().running == 0)

    _run(scenario, tiny_checkpoint, max_batch=1)


def test_full_queue_raises_backend_unavailable(tiny_checkpoint: Path) -> None:
    async def scenario(engine: LocalEngine) -> None:
        running = asyncio.create_task(engine.generate(_request("a", max_tokens=100_000)))
        await _wait_for(lambda: engine.stats().running == 1)
        waiting = asyncio.create_task(engine.generate(_request("b", max_tokens=2)))
        await _wait_for(lambda: engine.stats().waiting == 1)
        with pytest.raises(BackendUnavailable) as raised:
            await engine.generate(_request("c"))
        assert raised.value.retry_after_s > 0
        running.cancel()
        assert (await waiting).completion_tokens == 2
        with pytest.raises(asyncio.CancelledError):
            await running

    _run(scenario, tiny_checkpoint, max_batch=1, max_queue=1)


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"model": "gpt-4"}, UnknownModel),
        ({"adapter": "lora-a"}, UnknownModel),
        ({"max_tokens": 0}, BackendError),
        ({"top_p": 0.0}, BackendError),
    ],
)
def test_invalid_requests_are_rejected(
    tiny_checkpoint: Path, overrides: dict[str, object], error: type[BackendError]
) -> None:
    async def scenario(engine: LocalEngine) -> None:
        with pytest.raises(error):
            await engine.generate(_request("x", **overrides))
        with pytest.raises(error):
            [c async for c in engine.stream(_request("x", **overrides))]

    _run(scenario, tiny_checkpoint)


def test_long_prompt_is_cut_keeping_the_fim_prefix_sentinel(tiny_checkpoint: Path) -> None:
    async def scenario(engine: LocalEngine) -> None:
        prompt = "<fim_prefix>" + "x = 1\n" * 400 + "<fim_suffix>\n<fim_middle>"
        assert engine.count_tokens(prompt) > TINY.context
        result = await engine.generate(_request(prompt, max_tokens=5000))
        assert result.prompt_tokens == TINY.context // 2
        assert result.prompt_tokens + result.completion_tokens <= TINY.context
        assert result.finish_reason == "length"

    _run(scenario, tiny_checkpoint)


def test_closed_engine_is_unavailable(tiny_checkpoint: Path) -> None:
    async def scenario() -> None:
        engine = LocalEngine.load(tiny_checkpoint)
        await engine.aclose()
        with pytest.raises(BackendUnavailable):
            await engine.generate(_request("x"))

    asyncio.run(scenario())


# -- the OpenAI-compatible server -------------------------------------------------------------


@contextlib.contextmanager
def _serve(app: FastAPI) -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    config = uvicorn.Config(app, log_config=None, log_level="warning", ws="none", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


def test_openai_client_against_the_engine_server(tiny_checkpoint: Path) -> None:
    with _serve(create_app(tiny_checkpoint, max_batch=2, threads=1)) as url:
        with openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as client:
            args: dict[str, object] = {
                "model": TINY_NAME,
                "prompt": "import os\n",
                "temperature": 0,
            }
            whole = client.completions.create(max_tokens=6, **args)  # type: ignore[call-overload]
            assert whole.choices[0].finish_reason == "length"
            assert whole.usage is not None and whole.usage.completion_tokens == 6
            stream = client.completions.create(max_tokens=6, stream=True, **args)  # type: ignore[call-overload]
            assert "".join(c.choices[0].text for c in stream) == whole.choices[0].text
            with pytest.raises(openai.NotFoundError):
                client.completions.create(model="gpt-4", prompt="x", max_tokens=2)
            assert [m.id for m in client.models.list()] == [TINY_NAME]


# -- the committed checkpoint ------------------------------------------------------------------


def test_committed_checkpoint_is_small_and_documented() -> None:
    assert (DEFAULT_CHECKPOINT / WEIGHTS_FILE).stat().st_size <= CHECKPOINT_LIMIT_BYTES
    record = json.loads((DEFAULT_CHECKPOINT / "training.json").read_text())
    # Total over the phases (the loop checks its budget between steps, so it overshoots by <1 s).
    assert record["total_training_minutes"] <= 30.1
    assert record["evaluation"]["bits_per_byte_left_to_right"]["python"] < 3.0
    assert set(record["data"]["per_language"]) >= {"python"}


@torch.inference_mode()
def test_trained_model_has_learned_python() -> None:
    model, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    tok = tokenizer.Tokenizer.for_checkpoint(DEFAULT_CHECKPOINT)
    # The start of json/__init__.py (seen in training: held-out figures are in training.json).
    ids = tok.encode_bytes(Path(json.__file__).read_bytes()[:2000])[: model.config.context]
    real = torch.tensor([ids])
    shuffled = real[:, torch.randperm(real.shape[1], generator=torch.Generator().manual_seed(0))]

    def bits_per_byte(ids: torch.Tensor) -> float:
        logits = model(ids[:, :-1])[0]
        nats = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum")
        scored = sum(len(tok.token_bytes(int(i))) for i in ids[0, 1:])
        return float(nats) / scored / 0.6931471805599453

    # A uniform byte model scores 8 bits per byte; the same tokens shuffled keep the unigram
    # statistics, so the gap between the two is what the model knows of code structure.
    assert bits_per_byte(real) < 3.0
    assert bits_per_byte(shuffled) - bits_per_byte(real) > 2.0


# Known shortfall of the 30-minute checkpoint: masked-line exact match is 1.7 % (training.json),
# and after "return " it starts a new indented line instead of the expression. Strict: this
# starts failing once the model infills this case.
@pytest.mark.xfail(reason="the committed 30-minute model does not complete this line", strict=True)
def test_trained_model_completes_python_plausibly() -> None:
    async def scenario(engine: LocalEngine) -> str:
        result = await engine.generate(
            GenerationRequest(
                prompt="<fim_prefix>def add(a, b):\n    return <fim_suffix>\n<fim_middle>",
                model=engine.model_name,
                adapter=None,
                max_tokens=48,
                temperature=0.0,
                top_p=1.0,
                stop=("\n", *tokenizer.SPECIAL_TOKENS),
            )
        )
        return result.text

    tail = _run(scenario, DEFAULT_CHECKPOINT)
    assert "a" in tail and "b" in tail, tail
    ast.parse(f"def add(a, b):\n    return {tail}\n")
