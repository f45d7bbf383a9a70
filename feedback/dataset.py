"""Labelled examples: the project's hand-labelled comments, corrections, codebook phrases."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path

from feedback.features import CommentInput, theme_phrases
from feedback.models import POLARITIES
from feedback.views import ThemeView

LABELLED_SET = "labelled_feedback.jsonl"


@dataclasses.dataclass(frozen=True, slots=True)
class Example:
    """A comment with its true themes; polarity None where unknown (a codebook phrase)."""

    comment: CommentInput
    theme_ids: tuple[str, ...]
    polarity: str | None
    language: str = ""


def _parse(line: str, where: str) -> Example:
    item = json.loads(line)
    themes = item.get("themes")
    if not isinstance(themes, list) or not themes:
        raise ValueError(f"{where}: 'themes' must be a non-empty list")
    if item.get("polarity") not in POLARITIES:
        raise ValueError(f"{where}: 'polarity' must be one of {POLARITIES}")
    if not isinstance(item.get("text"), str) or not item["text"].strip():
        raise ValueError(f"{where}: 'text' must be a non-empty string")
    return Example(
        comment=CommentInput(
            text=item["text"], rating=item.get("rating"), rating_scale=item["rating_scale"]
        ),
        theme_ids=tuple(themes),
        polarity=item["polarity"],
        language=item.get("language", ""),
    )


def load_labelled(path: Path | None = None) -> list[Example]:
    """The labelled set (JSON lines), by default the one shipped with the package."""
    if path is None:
        text = resources.files("feedback.data").joinpath(LABELLED_SET).read_text("utf-8")
        where = LABELLED_SET
    else:
        text = path.read_text("utf-8")
        where = str(path)
    return [
        _parse(line, f"{where}:{number}")
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]


def resolve_themes(
    examples: Iterable[Example], merged_into: Mapping[str, str], known: Sequence[str]
) -> list[Example]:
    """Examples with merged themes replaced by their survivors; unknown themes are an error."""
    out = []
    allowed = set(known)
    for example in examples:
        themes = tuple(dict.fromkeys(merged_into.get(t, t) for t in example.theme_ids))
        unknown = [t for t in themes if t not in allowed]
        if unknown:
            raise ValueError(
                f"themes {unknown} of {example.comment.text!r} are not in the codebook"
            )
        out.append(dataclasses.replace(example, theme_ids=themes))
    return out


def phrase_examples(themes: Sequence[ThemeView]) -> list[Example]:
    """Each active theme's name, description and example phrases as training examples."""
    return [
        Example(comment=CommentInput(text=phrase), theme_ids=(theme.id,), polarity=None)
        for theme in themes
        if theme.active
        for phrase in theme_phrases(theme)
    ]
