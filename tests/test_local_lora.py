"""LoRA adapters of the local engine: files, base binding, multi-adapter batches, serving.

Mechanics run on a tiny random-weight base with random adapters (B made non-zero so that an
adapter changes the output); the committed ``python-lora`` adapter is checked for size and for
being bound to the committed base.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import openai
import pytest
import torch

from serving.backend import GenerationRequest, UnknownModel
from serving.local.engine import DEFAULT_ADAPTERS, DEFAULT_CHECKPOINT, LocalEngine, LoraMode
from serving.local.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    AdapterBank,
    AdapterMismatch,
    LoraAdapter,
    LoraConfig,
    RowDeltas,
    base_hash,
    load_adapter,
)
from serving.local.model import FimTransformer, ModelConfig, load_checkpoint, save_checkpoint
from serving.local.server import create_app
from tests.test_local_engine import _serve

TINY = ModelConfig(d_model=64, n_layers=2, n_heads=2, d_ff=128, context=256)
TINY_NAME = "tiny-lora-base"
ADAPTER_LIMIT_BYTES = 2 * 1024 * 1024
PROMPTS = ("def main():\n    ", "import os\nimport ", "class Parser:\n    def ", "for i in ")


def _random_adapter(model: FimTransformer, seed: int, config: LoraConfig) -> LoraAdapter:
    torch.manual_seed(seed)
    adapter = LoraAdapter(model, config)
    with torch.no_grad():
        for b in adapter.b.values():
            b.normal_(std=3.0)  # a trained adapter's B is non-zero; a fresh one's is zero
    return adapter.eval()


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = FimTransformer(TINY)
    with torch.no_grad():
        model.embed.weight.mul_(10.0)  # sharp logits: greedy choices far from ties
        model.embed.weight[256:] = 0.0  # sentinels never win, so completions run to max_tokens
    directory = tmp_path_factory.mktemp("lora-base")
    save_checkpoint(model.eval(), directory, name=TINY_NAME)
    return directory


@pytest.fixture(scope="module")
def adapters_dir(base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two adapters of different ranks and targets, saved for the tiny base."""
    model, _ = load_checkpoint(base_dir)
    root = tmp_path_factory.mktemp("adapters")
    configs = {
        "alpha-lora": LoraConfig(rank=4, alpha=8.0),
        "beta-lora": LoraConfig(rank=2, alpha=2.0, targets=("qkv",)),
    }
    for seed, (name, config) in enumerate(configs.items(), start=1):
        _random_adapter(model, seed, config).save(
            root / name, name=name, base=base_hash(base_dir), record={"training": "random"}
        )
    return root


def _request(prompt: str, adapter: str | None, max_tokens: int = 12) -> GenerationRequest:
    return GenerationRequest(
        prompt=prompt,
        model=TINY_NAME,
        adapter=adapter,
        max_tokens=max_tokens,
        temperature=0.0,
        top_p=1.0,
        stop=(),
    )


def test_adapter_round_trips_through_its_files(base_dir: Path, tmp_path: Path) -> None:
    model, _ = load_checkpoint(base_dir)
    adapter = _random_adapter(model, 7, LoraConfig(rank=4, alpha=8.0))
    adapter.save(tmp_path, name="round", base=base_hash(base_dir), record={"data": "none"})
    name, loaded = load_adapter(tmp_path, model, base=base_hash(base_dir))
    assert name == "round" and loaded.config == adapter.config
    config = json.loads((tmp_path / ADAPTER_CONFIG).read_text())
    assert config["target_modules"] == ["qkv", "proj"] and config["data"] == "none"
    ids = torch.tensor([list(b"def f(x):\n    return x")])
    with torch.no_grad():
        base, saved, restored = model(ids), model(ids, adapter), model(ids, loaded)
    # fp16 storage: equal to rounding, and the adapter does change the output.
    assert torch.allclose(saved, restored, atol=2e-2 * float(saved.abs().max()))
    assert not torch.allclose(base, restored, atol=1e-3)


def test_adapter_on_another_base_is_refused(
    base_dir: Path, adapters_dir: Path, tmp_path: Path
) -> None:
    torch.manual_seed(123)
    other = FimTransformer(TINY)
    save_checkpoint(other, tmp_path, name=TINY_NAME)
    with pytest.raises(AdapterMismatch, match="trained on base"):
        load_adapter(adapters_dir / "alpha-lora", other, base=base_hash(tmp_path))
    # An explicitly configured adapter of another base stops the engine from starting ...
    with pytest.raises(AdapterMismatch):
        LocalEngine.load(tmp_path, adapter_paths=[adapters_dir], threads=1)
    # ... while one merely found in the adapter directory is skipped.
    engine = LocalEngine.load(tmp_path, adapter_root=adapters_dir, threads=1)
    assert engine.adapter_names == []
    asyncio.run(engine.aclose())


def test_gathered_and_grouped_deltas_agree(base_dir: Path, adapters_dir: Path) -> None:
    model, _ = load_checkpoint(base_dir)
    loaded = dict(
        load_adapter(adapters_dir / n, model, base=base_hash(base_dir))
        for n in ("alpha-lora", "beta-lora")
    )
    bank = AdapterBank(model, loaded)
    rows = torch.tensor([0, 1, 2, 1])
    x = torch.randn(4, 3, TINY.d_model)
    for layer in range(TINY.n_layers):
        for target in ("qkv", "proj"):
            gathered = RowDeltas(bank, rows).delta(layer, target, x)
            grouped = RowDeltas(bank, rows, grouped=True).delta(layer, target, x)
            assert gathered is not None and grouped is not None
            assert torch.allclose(gathered, grouped, atol=1e-5)
            assert float(gathered[0].abs().max()) == 0.0  # row 0: the base model
            single = loaded["alpha-lora"].delta(layer, target, x[1:2])
            assert single is not None and torch.allclose(gathered[1:2], single, atol=1e-5)


@pytest.mark.parametrize("mode", ["gathered", "grouped"])
def test_mixed_adapter_batch_equals_each_request_alone(
    base_dir: Path, adapters_dir: Path, mode: LoraMode
) -> None:
    adapters = (None, "alpha-lora", "beta-lora", "alpha-lora")
    requests = [_request(p, a) for p, a in zip(PROMPTS, adapters, strict=True)]

    async def scenario() -> tuple[list[str], list[str], list[str]]:
        engine = LocalEngine.load(
            base_dir, adapter_root=adapters_dir, threads=1, max_batch=4, lora_mode=mode
        )
        try:
            assert engine.adapter_names == ["alpha-lora", "beta-lora"]
            together = await asyncio.gather(*(engine.generate(r) for r in requests))
            alone = [(await engine.generate(r)).text for r in requests]
            base = [(await engine.generate(_request(p, None))).text for p in PROMPTS]
            return [r.text for r in together], alone, base
        finally:
            await engine.aclose()

    together, alone, base = asyncio.run(scenario())
    assert together == alone
    # The adapters do change the completions (else the comparison above proves little).
    assert together[0] == base[0] and together[1:] != base[1:]


def test_unknown_adapter_is_an_unknown_model(base_dir: Path, adapters_dir: Path) -> None:
    async def scenario() -> None:
        engine = LocalEngine.load(base_dir, adapter_root=adapters_dir, threads=1)
        try:
            with pytest.raises(UnknownModel, match="gamma-lora"):
                await engine.generate(_request("x", "gamma-lora"))
        finally:
            await engine.aclose()

    asyncio.run(scenario())


def test_engine_server_lists_and_serves_adapters_by_model_name(
    base_dir: Path, adapters_dir: Path
) -> None:
    with _serve(create_app(base_dir, threads=1, adapter_paths=[adapters_dir])) as url:
        with openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as client:
            cards = client.models.list().data
            assert [m.id for m in cards] == [TINY_NAME, "alpha-lora", "beta-lora"]
            args: dict[str, object] = {"prompt": PROMPTS[0], "max_tokens": 8, "temperature": 0}
            base = client.completions.create(model=TINY_NAME, **args)  # type: ignore[call-overload]
            tuned = client.completions.create(model="alpha-lora", **args)  # type: ignore[call-overload]
            assert tuned.model == "alpha-lora"
            assert tuned.choices[0].text != base.choices[0].text
            with pytest.raises(openai.NotFoundError):
                client.completions.create(model="gamma-lora", prompt="x", max_tokens=2)


def test_committed_python_adapter_is_small_bound_to_the_base_and_documented() -> None:
    directory = DEFAULT_ADAPTERS / "python-lora"
    assert (directory / ADAPTER_WEIGHTS).stat().st_size <= ADAPTER_LIMIT_BYTES
    config = json.loads((directory / ADAPTER_CONFIG).read_text())
    assert config["base_checkpoint_sha256"] == base_hash(DEFAULT_CHECKPOINT)
    assert config["data"]["language"] == "python"
    figures = config["evaluation"]
    # The adapter was trained for Python: it must score better there than the base does.
    assert (
        figures["adapter"]["bits_per_byte_left_to_right"]["python"]
        < figures["base"]["bits_per_byte_left_to_right"]["python"]
    )
    engine = LocalEngine.load(DEFAULT_CHECKPOINT, threads=1)
    assert "python-lora" in engine.adapter_names
    asyncio.run(engine.aclose())
