"""Model variants: what an experiment arm changes about how a completion is served.

A ``Variant`` is complete (the gateway can serve with it); an arm carries ``VariantOverrides``,
only the fields it changes, laid over the default variant. Experiments in different layers then
change different things (one the model, another the decoding) and compose.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class FimFamily(enum.StrEnum):
    """Fill-in-the-middle prompt formats (serving/fim.py; docs/architecture.md, FIM templates)."""

    STARCODER = "starcoder"
    QWEN25_CODER = "qwen2.5-coder"
    DEEPSEEK_CODER = "deepseek-coder"
    CODELLAMA = "codellama"
    CODEGEMMA = "codegemma"
    CODESTRAL = "codestral"
    INCODER = "incoder"


class Decoding(BaseModel):
    """Decoding parameters, pinned per arm (vLLM would otherwise use the model's defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: Annotated[float, Field(ge=0, le=2)] = 0.2
    top_p: Annotated[float, Field(gt=0, le=1)] = 0.95
    max_tokens: Annotated[int, Field(ge=1, le=4096)] = 64
    stop: tuple[str, ...] = ()
    seed: int | None = None


class PostProcess(BaseModel):
    """What the gateway does to a completion before returning it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # "block": cut a multi-line completion at the end of the enclosing block; "lines": keep at
    # most max_lines lines; "none": leave it.
    trim: Literal["block", "lines", "none"] = "block"
    max_lines: Annotated[int, Field(ge=1, le=200)] = 16
    drop_if_repeats_suffix: bool = True


class Variant(BaseModel):
    """Everything needed to serve a completion."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["local", "vllm"] = "local"
    model: Annotated[str, Field(min_length=1, max_length=200)]
    adapter: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    fim_template: FimFamily = FimFamily.STARCODER
    decoding: Decoding = Decoding()
    context_tokens: Annotated[int, Field(ge=16, le=1_000_000)] = 2048
    # Share of the context budget given to the code before the cursor (CodeCompose: 70/30).
    prefix_share: Annotated[float, Field(gt=0, lt=1)] = 0.7
    postprocess: PostProcess = PostProcess()

    def with_overrides(self, overrides: VariantOverrides) -> Variant:
        """This variant with an arm's changes applied (nested settings merged field by field)."""
        data = self.model_dump()
        for name, value in overrides.model_dump(exclude_unset=True).items():
            if isinstance(value, dict) and isinstance(data.get(name), dict):
                data[name] = {**data[name], **value}
            else:
                data[name] = value
        return Variant.model_validate(data)


class DecodingOverrides(BaseModel):
    """Decoding parameters an arm changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=4096)] | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None


class PostProcessOverrides(BaseModel):
    """Post-processing an arm changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trim: Literal["block", "lines", "none"] | None = None
    max_lines: Annotated[int, Field(ge=1, le=200)] | None = None
    drop_if_repeats_suffix: bool | None = None


class VariantOverrides(BaseModel):
    """The part of a variant an arm changes; unset fields keep the default variant's value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["local", "vllm"] | None = None
    model: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    adapter: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    fim_template: FimFamily | None = None
    decoding: DecodingOverrides | None = None
    context_tokens: Annotated[int, Field(ge=16, le=1_000_000)] | None = None
    prefix_share: Annotated[float, Field(gt=0, lt=1)] | None = None
    postprocess: PostProcessOverrides | None = None

    def as_dict(self) -> dict[str, Any]:
        """Only the fields the arm sets, for storage."""
        return self.model_dump(mode="json", exclude_unset=True)
