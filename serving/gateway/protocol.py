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

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from collector.schemas import Id, Label, ShortText, Timestamp
from experiments.variants import VariantOverrides

Text = Annotated[str, StringConstraints(max_length=1_000_000)]
# The org only picks experiments (targeting); it is in no event, so it keeps the gateway's rule.
Org = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


# File extension -> language name, as IDE plugins name them (VS Code language identifiers).
EXTENSION_LANGUAGES = {
    "py": "python",
    "pyi": "python",
    "js": "javascript",
    "jsx": "javascriptreact",
    "mjs": "javascript",
    "ts": "typescript",
    "tsx": "typescriptreact",
    "java": "java",
    "kt": "kotlin",
    "go": "go",
    "rs": "rust",
    "c": "c",
    "h": "c",
    "cc": "cpp",
    "cpp": "cpp",
    "hpp": "cpp",
    "cs": "csharp",
    "rb": "ruby",
    "php": "php",
    "swift": "swift",
    "scala": "scala",
    "sh": "shellscript",
    "sql": "sql",
    "lua": "lua",
}


def language_of(filepath: str | None) -> str:
    """The language of ``filepath`` by its extension, or ``unknown``."""
    if not filepath:
        return "unknown"
    name = filepath.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
    _, dot, extension = name.rpartition(".")
    return EXTENSION_LANGUAGES.get(extension.lower(), "unknown") if dot else "unknown"


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
    # The developer: the unit experiments assign by (the events' user_id).
    user: Id
    max_tokens: Annotated[int, Field(ge=1, le=4096)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    stop: (
        Annotated[str, StringConstraints(min_length=1, max_length=64)]
        | Annotated[
            list[Annotated[str, StringConstraints(min_length=1, max_length=64)]],
            Field(max_length=8),
        ]
        | None
    ) = None
    n: Annotated[int, Field(ge=1, le=8)] = 1
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    # CodeLift's own (send them with the openai client's ``extra_body``).
    # Lower-cased; inferred from ``filepath``'s extension when not sent (see ``language_of``).
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

    @property
    def prompt_text(self) -> str:
        """The code before the cursor."""
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    @property
    def language_name(self) -> str:
        """The language experiments target by: sent, else from the file's extension."""
        if self.language is not None:
            return self.language.lower()
        return language_of(self.filepath)

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
