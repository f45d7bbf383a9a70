"""Where a backtest hides code: realistic trigger points in a file, sampled reproducibly.

Triggers (the cursor positions at which an IDE asks for a completion):
- ``end_of_line``: the cursor inside a line's code; the rest of the line is hidden.
- ``after_bracket``: the cursor just after ``(``, ``[`` or ``{``; the rest of the line is hidden.
- ``whole_line``: the cursor after a line's indentation (where an editor puts it after Enter);
  the line's code is hidden.
- ``block``: a line that opens a block (ending in ``:`` or ``{``) is written; the cursor is at
  the indentation of the block's first line and the block's body is hidden.
A hidden span never contains the newline that ends its last line.
"""

from __future__ import annotations

import dataclasses
import enum
import random
from collections.abc import Iterator, Sequence

from backtest.corpus import CorpusFile
from backtest.options import DEFAULT_PREFIX_CHARS, DEFAULT_SUFFIX_CHARS

# Longer targets are not what completions are judged on (and are slow to score).
MAX_TARGET_CHARS = 400
MAX_BLOCK_LINES = 8
OPENING_BRACKETS = "([{"
BLOCK_OPENERS = (":", "{")


class Trigger(enum.StrEnum):
    """Where the cursor is and how much is hidden (see the module docstring)."""

    END_OF_LINE = "end_of_line"
    AFTER_BRACKET = "after_bracket"
    WHOLE_LINE = "whole_line"
    BLOCK = "block"


@dataclasses.dataclass(frozen=True, slots=True)
class Line:
    """One line of a file: where it starts, where its code starts, where it ends (before its
    newline)."""

    start: int
    code_start: int
    end: int

    @property
    def indent(self) -> int:
        """Width of the indentation, in characters."""
        return self.code_start - self.start

    @property
    def blank(self) -> bool:
        """Whether the line has no code."""
        return self.code_start == self.end


def lines_of(text: str) -> list[Line]:
    """The lines of ``text`` with their offsets."""
    lines: list[Line] = []
    start = 0
    for raw in text.splitlines(keepends=True):
        body = raw.rstrip("\r\n")
        code_start = start + len(body) - len(body.lstrip())
        lines.append(Line(start, min(code_start, start + len(body)), start + len(body)))
        start += len(raw)
    return lines


def _code_end(text: str, line: Line) -> int:
    # Trailing spaces are not something anyone expects a model to produce.
    return line.start + len(text[line.start : line.end].rstrip())


def _end_of_line(text: str, lines: Sequence[Line]) -> Iterator[tuple[int, int]]:
    for line in lines:
        end = _code_end(text, line)
        for cursor in range(line.code_start + 1, end):
            if not text[cursor:end].isspace():
                yield cursor, end


def _after_bracket(text: str, lines: Sequence[Line]) -> Iterator[tuple[int, int]]:
    for line in lines:
        end = _code_end(text, line)
        for cursor in range(line.code_start + 1, end):
            if text[cursor - 1] in OPENING_BRACKETS and text[cursor:end].strip():
                yield cursor, end


def _whole_line(text: str, lines: Sequence[Line]) -> Iterator[tuple[int, int]]:
    for line in lines:
        if not line.blank:
            yield line.code_start, _code_end(text, line)


def _block(text: str, lines: Sequence[Line]) -> Iterator[tuple[int, int]]:
    for i, opener in enumerate(lines):
        if opener.blank or not text[opener.start : opener.end].rstrip().endswith(BLOCK_OPENERS):
            continue
        first = i + 1
        while first < len(lines) and lines[first].blank:
            first += 1
        if first == len(lines) or lines[first].indent <= opener.indent:
            continue
        # The body: every following line that is blank or indented deeper than the opener.
        last, k = first, first + 1
        while k < len(lines) and (lines[k].blank or lines[k].indent > opener.indent):
            if not lines[k].blank:
                last = k
            if last - first >= MAX_BLOCK_LINES:
                break
            k += 1
        if last - first < MAX_BLOCK_LINES:
            yield lines[first].code_start, _code_end(text, lines[last])


_FINDERS = {
    Trigger.END_OF_LINE: _end_of_line,
    Trigger.AFTER_BRACKET: _after_bracket,
    Trigger.WHOLE_LINE: _whole_line,
    Trigger.BLOCK: _block,
}


def spans(text: str, trigger: Trigger) -> list[tuple[int, int]]:
    """Every ``(start, end)`` a trigger can hide in ``text`` (targets of 1 to
    ``MAX_TARGET_CHARS`` characters)."""
    lines = lines_of(text)
    return [
        (start, end)
        for start, end in _FINDERS[trigger](text, lines)
        if 0 < end - start <= MAX_TARGET_CHARS
    ]


@dataclasses.dataclass(frozen=True, slots=True)
class MaskedSpan:
    """One sample: the code before and after the cursor, and the hidden code to restore."""

    index: int
    path: str
    language: str
    trigger: Trigger
    start: int
    end: int
    prefix: str
    target: str
    suffix: str


def mask(
    file: CorpusFile,
    start: int,
    end: int,
    *,
    trigger: Trigger,
    index: int = 0,
    prefix_chars: int = DEFAULT_PREFIX_CHARS,
    suffix_chars: int = DEFAULT_SUFFIX_CHARS,
) -> MaskedSpan:
    """Hide ``file.text[start:end]``, keeping up to ``prefix_chars`` before and
    ``suffix_chars`` after it (the gateway cuts further to the arm's token budget)."""
    text = file.text
    return MaskedSpan(
        index=index,
        path=file.path,
        language=file.language,
        trigger=trigger,
        start=start,
        end=end,
        prefix=text[max(0, start - prefix_chars) : start],
        target=text[start:end],
        suffix=text[end : end + suffix_chars],
    )


def sample_spans(
    files: Sequence[CorpusFile],
    *,
    samples_per_language: int,
    seed: int,
    triggers: Sequence[Trigger] = tuple(Trigger),
    prefix_chars: int = DEFAULT_PREFIX_CHARS,
    suffix_chars: int = DEFAULT_SUFFIX_CHARS,
) -> list[MaskedSpan]:
    """``samples_per_language`` masked spans per language, triggers taken in turn.

    Deterministic for a seed: each language has its own random stream (seeded by the seed and
    the language), so adding a language or a file of another language changes nothing else.
    Files are visited in a shuffled order, one sample each, round and round; a file with no
    span for a trigger is passed over. Fewer samples come back when the files run out of spans.
    """
    if samples_per_language < 1:
        raise ValueError(f"samples must be >= 1, got {samples_per_language}")
    if not triggers:
        raise ValueError("at least one trigger is needed")
    by_language: dict[str, list[CorpusFile]] = {}
    for file in sorted(files, key=lambda f: f.path):
        by_language.setdefault(file.language, []).append(file)
    samples: list[MaskedSpan] = []
    for language in sorted(by_language):
        rng = random.Random(f"{seed}:{language}")
        order = list(by_language[language])
        rng.shuffle(order)
        found: dict[tuple[str, Trigger], list[tuple[int, int]]] = {}
        used: set[tuple[str, int, int]] = set()
        live = list(triggers)
        visits = 0
        for taken in range(samples_per_language):
            picked: tuple[CorpusFile, Trigger, tuple[int, int]] | None = None
            while picked is None and live:
                trigger = live[taken % len(live)]
                for _ in range(len(order)):
                    file = order[visits % len(order)]
                    visits += 1
                    key = (file.path, trigger)
                    if key not in found:
                        found[key] = spans(file.text, trigger)
                    choices = [s for s in found[key] if (file.path, *s) not in used]
                    if choices:
                        picked = file, trigger, rng.choice(choices)
                        break
                else:
                    live.remove(trigger)  # no file has a span of this kind left
            if picked is None:
                break
            file, trigger, (start, end) = picked
            used.add((file.path, start, end))
            samples.append(
                mask(
                    file,
                    start,
                    end,
                    trigger=trigger,
                    index=len(samples),
                    prefix_chars=prefix_chars,
                    suffix_chars=suffix_chars,
                )
            )
    return samples
