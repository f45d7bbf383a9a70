"""Labelled examples: real developer comments, the project's written ones, corrections, phrases.

The shipped set has two files under ``feedback/data/`` (see its ``DATASHEET.md``):

- ``comments.jsonl``: comments about AI code completion from public issue trackers, forums and
  blogs, paraphrased, each with its ``source`` (the thread or page), 1–3 ``themes``, the
  ``primary`` theme, a three-valued ``polarity`` and its ``split``: ``test`` for the comments set
  aside before any tuning (whole sources, never scored but once per tagger change), ``train``
  for the rest.
- ``written_comments.jsonl``: short rated comments written for the project, a small extra that
  only ever trains (it is what the simulator's and the dashboard seed's comments look like).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Literal

from feedback.features import CommentInput, theme_phrases
from feedback.models import POLARITIES
from feedback.views import ThemeView

REAL_SET = "comments.jsonl"
WRITTEN_SET = "written_comments.jsonl"
MAX_THEMES = 3
RATING_SCALES = ("stars", "thumbs")
Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")


@dataclasses.dataclass(frozen=True, slots=True)
class Example:
    """A comment with its true labels; polarity None where unknown (a codebook phrase).

    ``primary`` is the theme the comment is mainly about (one of ``theme_ids``; the first one
    where a file does not say). ``source`` groups comments of one thread or page: evaluation
    never puts a source on both sides of a split. ``split`` is None for examples that only
    ever train (written comments, corrections, phrases).
    """

    comment: CommentInput
    theme_ids: tuple[str, ...]
    polarity: str | None
    language: str = ""
    primary: str = ""
    source: str = ""
    split: Split | None = None

    def __post_init__(self) -> None:
        if not self.primary and self.theme_ids:
            object.__setattr__(self, "primary", self.theme_ids[0])


class LabelledSetError(ValueError):
    """A labelled file breaks the format; the message names the line and the field."""


def _string_list(item: dict[str, object], where: str) -> tuple[str, ...]:
    themes = item.get("themes")
    if (
        not isinstance(themes, list)
        or not 1 <= len(themes) <= MAX_THEMES
        or not all(isinstance(t, str) and t for t in themes)
        or len(set(themes)) != len(themes)
    ):
        raise LabelledSetError(
            f"{where}: 'themes' must be a list of 1 to {MAX_THEMES} distinct theme ids"
        )
    return tuple(themes)


def _parse(line: str, where: str) -> Example:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        raise LabelledSetError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(item, dict):
        raise LabelledSetError(f"{where}: each line must be a JSON object")
    text = item.get("text")
    if not isinstance(text, str) or not text.strip():
        raise LabelledSetError(f"{where}: 'text' must be a non-empty string")
    themes = _string_list(item, where)
    primary = item.get("primary", themes[0])
    if primary not in themes:
        raise LabelledSetError(f"{where}: 'primary' {primary!r} is not one of its 'themes'")
    if item.get("polarity") not in POLARITIES:
        raise LabelledSetError(f"{where}: 'polarity' must be one of {POLARITIES}")
    rating = item.get("rating")
    scale = item.get("rating_scale", "stars")
    if scale not in RATING_SCALES:
        raise LabelledSetError(f"{where}: 'rating_scale' must be one of {RATING_SCALES}")
    if rating is not None and (not isinstance(rating, int) or isinstance(rating, bool)):
        raise LabelledSetError(f"{where}: 'rating' must be an integer or absent")
    split = item.get("split")
    if split is not None and split not in SPLITS:
        raise LabelledSetError(f"{where}: 'split' must be one of {SPLITS} or absent")
    source = item.get("source") or where
    if not isinstance(source, str):
        raise LabelledSetError(f"{where}: 'source' must be a string")
    return Example(
        comment=CommentInput(text=text, rating=rating, rating_scale=scale),
        theme_ids=themes,
        polarity=item["polarity"],
        language=str(item.get("language", "")),
        primary=primary,
        source=source,
        split=split,
    )


def parse_labelled(text: str, where: str) -> list[Example]:
    """Examples of a JSON-lines text; ``where`` names it in error messages."""
    return [
        _parse(line, f"{where}:{number}")
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]


def _shipped(name: str) -> list[Example]:
    return parse_labelled(resources.files("feedback.data").joinpath(name).read_text("utf-8"), name)


def load_labelled(path: Path | None = None) -> list[Example]:
    """A labelled set (JSON lines); by default the shipped one: real comments, then written."""
    if path is None:
        return [*_shipped(REAL_SET), *_shipped(WRITTEN_SET)]
    return parse_labelled(path.read_text("utf-8"), str(path))


def load_real() -> list[Example]:
    """The shipped real comments (both splits)."""
    return _shipped(REAL_SET)


def load_written() -> list[Example]:
    """The shipped written comments (training only)."""
    return _shipped(WRITTEN_SET)


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
            raise LabelledSetError(
                f"themes {unknown} of {example.comment.text!r} are not in the codebook"
            )
        primary = merged_into.get(example.primary, example.primary)
        out.append(dataclasses.replace(example, theme_ids=themes, primary=primary))
    return out


def phrase_examples(themes: Sequence[ThemeView]) -> list[Example]:
    """Each active theme's name, description and example phrases as training examples."""
    return [
        Example(comment=CommentInput(text=phrase), theme_ids=(theme.id,), polarity=None)
        for theme in themes
        if theme.active
        for phrase in theme_phrases(theme)
    ]
