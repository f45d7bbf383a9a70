"""Wire schemas of the IDE clients' own APIs (``dialects`` maps them onto a completion).

Unknown fields are accepted, as on ``/v1/completions``: clients send more than the gateway uses.
Each model is what that client sends, taken from its source (``tests/fixtures/ide_clients``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from serving.gateway.protocol import MAX_STOP_STRINGS, StopString, Text


class TabbySegments(BaseModel):
    """The code around the cursor as Tabby's extensions send it."""

    model_config = ConfigDict(extra="allow", frozen=True)

    prefix: Text
    suffix: Text | None = None
    # A path relative to the workspace, or a URI (``file:///…``, ``untitled:…``).
    filepath: Annotated[str, StringConstraints(max_length=4096)] | None = None
    git_url: Annotated[str, StringConstraints(max_length=4096)] | None = None


class TabbyCompletion(BaseModel):
    """Tabby's ``POST /v1/completions`` body (its extensions' native API)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    segments: TabbySegments
    # The editor's language identifier (VS Code's: ``typescriptreact``, ``python``…).
    language: Annotated[str, StringConstraints(max_length=64)] | None = None
    user: Annotated[str, StringConstraints(max_length=128)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    seed: int | None = None
    mode: str | None = None


class FimCompletion(BaseModel):
    """``POST /v1/fim/completions``: Mistral's fill-in-the-middle API, as Continue calls it."""

    model_config = ConfigDict(extra="allow", frozen=True)

    model: Annotated[str, StringConstraints(min_length=1, max_length=200)] = "codelift"
    prompt: Text
    suffix: Text | None = None
    max_tokens: Annotated[int, Field(ge=1, le=4096)] | None = None
    min_tokens: Annotated[int, Field(ge=0)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    stop: StopString | Annotated[list[StopString], Field(max_length=MAX_STOP_STRINGS)] | None = None
    stream: bool = False
    random_seed: int | None = None


class ExtraChunk(BaseModel):
    """A piece of context from another file (llama.vscode's ring buffer of chunks)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    filename: Annotated[str, StringConstraints(max_length=4096)] | None = None
    text: Text = ""


class InfillRequest(BaseModel):
    """llama.cpp server's ``POST /infill``, as llama.vscode and llama.vim send it."""

    model_config = ConfigDict(extra="allow", frozen=True)

    input_prefix: Text = ""
    input_suffix: Text = ""
    # Context chunks from other files: accepted, not sent to the model (the arm's template
    # decides the prompt, and chunks would eat its context budget).
    input_extra: Annotated[list[ExtraChunk], Field(max_length=256)] = []
    # The current line up to the cursor: it follows ``input_prefix``.
    prompt: Text = ""
    # -1 (llama.cpp's "until done") leaves the arm's limit.
    n_predict: Annotated[int, Field(ge=-1, le=4096)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    stop: Annotated[list[StopString], Field(max_length=MAX_STOP_STRINGS)] | None = None
    stream: bool = False


class TgiError(BaseModel):
    """TGI's error body."""

    error: str
    error_type: str


class TgiParameters(BaseModel):
    """TGI's generation parameters, the ones a completion client sets."""

    model_config = ConfigDict(extra="allow", frozen=True)

    max_new_tokens: Annotated[int, Field(ge=1, le=4096)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    do_sample: bool | None = None
    stop: Annotated[list[StopString], Field(max_length=MAX_STOP_STRINGS)] | None = None
    return_full_text: bool | None = None


class TgiGenerate(BaseModel):
    """``POST /generate``: llm-ls's TGI backend (``inputs``: the FIM-rendered prompt)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    inputs: Text
    parameters: TgiParameters = TgiParameters()
    stream: bool = False
