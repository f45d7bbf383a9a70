"""Wire schemas of the gateway: OpenAI's ``/v1/completions`` and ``/v1/models``.

Unknown fields are accepted (OpenAI clients send fields we do not use) and their names logged
by the route; a wrong type or value in a known field is a 400 naming the field.

The fields the gateway copies into the events it logs (``user``, ``session_id``, ``ide``,
``language``, ``plugin_version``) have the collector's own types (``collector.schemas``): a value
the collector would reject is a 400 before anything is served, never a completion whose events
are lost.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from collector.schemas import Id, Label, ShortText, Timestamp
from core.languages import resolve_language
from experiments.variants import VariantOverrides

Text = Annotated[str, StringConstraints(max_length=1_000_000)]
# Continue sends 12 stop strings, Tabby and llm-ls a handful: 16 leaves room, and each one costs
# the post-processor a scan of every chunk.
MAX_STOP_STRINGS = 16
StopString = Annotated[str, StringConstraints(min_length=1, max_length=64)]
# The org only picks experiments (targeting); it is in no event, so it keeps the gateway's rule.
Org = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class CompletionRequest(BaseModel):
    """``POST /v1/completions``: the code around the cursor and who asks.

    ``temperature`` and ``top_p`` are accepted for compatibility, but the arm's values are
    used: decoding is pinned per arm. ``max_tokens`` may only lower the arm's limit, and ``stop``
    adds to the arm's stop strings.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    model: Annotated[str, StringConstraints(min_length=1, max_length=200)] = "codelift"
    # Code before the cursor; a list is accepted when it holds exactly one prompt.
    prompt: Text | Annotated[list[Text], Field(min_length=1, max_length=1)]
    # Code after the cursor.
    suffix: Text | None = None
    # The developer: the unit experiments assign by (the events' user_id). A personal API key's
    # user replaces it; with a shared key it is required (``deps.Caller.user_for``).
    user: Id | None = None
    max_tokens: Annotated[int, Field(ge=1, le=4096)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    stop: StopString | list[StopString] | None = None
    n: Annotated[int, Field(ge=1, le=8)] = 1
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    # CodeLift's own (send them with the openai client's ``extra_body``).
    # Folded onto the project's language ids, or taken from ``filepath`` (``core.languages``).
    language: Label | None = None
    filepath: Annotated[str, StringConstraints(max_length=4096)] | None = None
    trigger: Literal["auto", "manual"] = "auto"
    session_id: Id | None = None
    ide: Label = "unknown"
    org: Org = "unknown"
    plugin_version: ShortText | None = None
    # Serve this variant (changes laid over the default variant) instead of the user's arms:
    # offline evaluation. Only keys with the "evaluate" or "admin" scope may send it; nothing is
    # assigned, no exposure is written and no completion_served event is logged.
    variant: VariantOverrides | None = None
    # When the IDE asked, by its clock; used for event times only with ``trust_client_time``.
    client_ts: Timestamp | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _at_most_16_stops(cls, value: Any) -> Any:
        # Checked before the items, so the message names the real problem, not a type error.
        if isinstance(value, list) and len(value) > MAX_STOP_STRINGS:
            raise ValueError(
                f"at most {MAX_STOP_STRINGS} stop strings are accepted, got {len(value)}"
            )
        return value

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a chunk carrying the token usage (``stream_options``)."""
        return bool((self.stream_options or {}).get("include_usage"))

    @property
    def prompt_text(self) -> str:
        """The code before the cursor."""
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    @property
    def language_name(self) -> str:
        """The language experiments target by: a known one sent, else the file's, else ``other``
        (something unknown was sent) or ``unknown`` (nothing was); the collector folds the
        same way."""
        return resolve_language(self.language, self.filepath)

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """The request's stop strings as a tuple."""
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ModelCard(BaseModel):
    """One entry of ``GET /v1/models``: a model or adapter some variant serves."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "codelift"
    # The variant's backend, base model and adapter.
    backend: str
    root: str
    parent: str | None = None


class ModelList(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    """OpenAI's error object."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body."""

    error: ErrorDetail
