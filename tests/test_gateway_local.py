"""The official openai client against the gateway backed by the real local engine.

The shipped checkpoint is used when it is there; otherwise a tiny random-weight model, saved
and loaded through the engine's own checkpoint functions.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import torch
from sqlalchemy import Engine

from experiments.assignment.service import AssignmentService
from experiments.variants import Decoding, Variant
from serving.gateway.config import GatewaySettings
from serving.gateway.main import create_app
from serving.gateway.server import running
from serving.local.engine import DEFAULT_CHECKPOINT, LocalEngine
from serving.local.model import WEIGHTS_FILE, FimTransformer, ModelConfig, save_checkpoint
from tests.apikeys import Key
from tests.database import PgConnection
from tests.experiment_factories import CommittedRegistry, arm, definition

TINY = ModelConfig(d_model=64, n_layers=2, n_heads=2, d_ff=128, context=256)
PREFIX = "def fibonacci(n):\n    if n < 2:\n        return n\n    return "
SUFFIX = "\n\n\nprint(fibonacci(10))\n"


def _checkpoint(tmp: Path) -> Path:
    if (DEFAULT_CHECKPOINT / WEIGHTS_FILE).exists():
        return DEFAULT_CHECKPOINT
    torch.manual_seed(0)
    save_checkpoint(FimTransformer(TINY), tmp, name="tiny-gateway")
    return tmp


@pytest.fixture(scope="module")
def local_engine(tmp_path_factory: pytest.TempPathFactory) -> LocalEngine:
    return LocalEngine.load(_checkpoint(tmp_path_factory.mktemp("gateway-engine")), threads=1)


def _variant(engine: LocalEngine) -> Variant:
    return Variant(
        model=engine.model_name,
        decoding=Decoding(temperature=0.0, max_tokens=24),
        context_tokens=min(1024, engine.context_length // 2),
    )


def _settings(
    variant: Variant, database_url: str, collector_url: str, ingest_key: Key, spool: Path
) -> GatewaySettings:
    return GatewaySettings.model_validate(
        {
            "database_url": database_url,
            "environment": "test",
            "default_variant": variant,
            "collector_url": collector_url,
            "ingest_key": ingest_key.secret,
            "event_flush_interval_s": 0.05,
            "event_batch_size": 20,
            # Each gateway its own: two run at once here, and none shares the machine's.
            "event_spool_dir": spool,
        }
    )


@pytest.fixture(scope="module")
def gateway_url(
    local_engine: LocalEngine,
    database_url: str,
    collector_url: str,
    ingest_key: Key,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    settings = _settings(
        _variant(local_engine),
        database_url,
        collector_url,
        ingest_key,
        tmp_path_factory.mktemp("gateway-spool"),
    )
    app = create_app(settings, {"local": local_engine}, close_backends=True)
    with running(app) as url:
        yield url


@pytest.fixture
def client(gateway_url: str, serve_only_key: Key) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{gateway_url}/v1", api_key=serve_only_key.secret, max_retries=0, timeout=60
    ) as client:
        yield client


def _complete(client: openai.OpenAI, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "model": "codelift",
        "prompt": PREFIX,
        "suffix": SUFFIX,
        "user": "local-dev",
        "max_tokens": 24,
        "extra_body": {"language": "python", "trigger": "auto"},
    }
    values.update(overrides)
    return client.completions.create(**values)


def test_completions_and_streaming_from_the_local_engine(
    client: openai.OpenAI, local_engine: LocalEngine, pg: PgConnection, clean_events: None
) -> None:
    response = _complete(client)
    assert response.id.startswith("cmpl-")
    assert response.model == local_engine.model_name
    [choice] = response.choices
    assert isinstance(choice.text, str)
    assert choice.finish_reason in ("stop", "length")
    assert response.usage is not None and response.usage.prompt_tokens > 0
    assert response.model_extra is not None
    codelift = response.model_extra["codelift"]
    assert codelift["arms"] == {} and codelift["latency_ms"] >= codelift["backend_ms"] > 0

    # Greedy decoding: the stream releases exactly the same post-processed text.
    streamed = "".join(c.choices[0].text for c in _complete(client, stream=True))
    assert streamed == choice.text

    deadline = time.monotonic() + 10
    row = None
    while row is None and time.monotonic() < deadline:
        row = pg.execute(
            "SELECT model, completion_chars FROM completion_served WHERE suggestion_id = %s",
            (response.id,),
        ).fetchone()
        time.sleep(0.02)
    assert row is not None
    assert (row["model"], row["completion_chars"]) == (local_engine.model_name, len(choice.text))


def test_models_and_unknown_model(client: openai.OpenAI, local_engine: LocalEngine) -> None:
    assert [m.id for m in client.models.list()] == [local_engine.model_name]
    with pytest.raises(openai.NotFoundError):
        _complete(client, model="not-served")


def test_python_lora_arm_is_served_with_its_adapter(
    engine: Engine,
    registry: CommittedRegistry,
    database_url: str,
    collector_url: str,
    ingest_key: Key,
    serve_only_key: Key,
    clean_events: None,
    tmp_path: Path,
) -> None:
    # The arms of examples/experiments/lora-python.yaml, at full coverage.
    registry.apply(
        definition(
            "local-lora-python",
            targeting={"languages": {"include": ["python"]}},
            arms=[arm("control", 0.5), arm("lora", 0.5, adapter="python-lora")],
        )
    )
    lora_engine = LocalEngine.load(DEFAULT_CHECKPOINT, threads=1)
    base = lora_engine.model_name
    service = AssignmentService(engine, _variant(lora_engine), refresh_interval_s=0.05)
    service.start()
    settings = _settings(_variant(lora_engine), database_url, collector_url, ingest_key, tmp_path)
    try:
        with (
            running(
                create_app(settings, {"local": lora_engine}, service, close_backends=True)
            ) as url,
            openai.OpenAI(
                base_url=f"{url}/v1", api_key=serve_only_key.secret, max_retries=0, timeout=60
            ) as client,
        ):
            assert {m.id for m in client.models.list()} == {base, "python-lora"}
            served: dict[str, str] = {}
            for i in range(12):
                response = _complete(client, user=f"lora-user-{i}")
                assert response.model_extra is not None
                arm_name = response.model_extra["codelift"]["arms"]["local-lora-python"]
                assert response.model == ("python-lora" if arm_name == "lora" else base)
                served[arm_name] = response.choices[0].text
            assert set(served) == {"control", "lora"}
    finally:
        service.stop()
