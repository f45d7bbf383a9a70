"""What the gateway does to a completion before returning it (an arm's ``PostProcess``).

In order: cut at the first stop string; trim a multi-line completion to the enclosing block
(or to ``max_lines`` lines); drop a completion that only repeats the code after the cursor.
"""

from __future__ import annotations

import dataclasses

from experiments.variants import PostProcess

# A line ending in one of these opens a block whose body is indented deeper.
_OPENERS = (":", "{", "(", "[", "=>", " do", " then")
# A line starting with one of these closes the block opened at its indentation.
_CLOSERS = ("}", ")", "]", "end")


@dataclasses.dataclass(frozen=True, slots=True)
class Processed:
    """The text to return, and why it differs from what the model produced."""

    text: str
    stopped: bool = False
    trimmed: bool = False
    dropped: bool = False


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """``text`` up to the earliest stop string, and whether one was found."""
    end = len(text)
    for s in stop:
        if s:
            at = text.find(s)
            if 0 <= at < end:
                end = at
    return text[:end], end < len(text)


def _indent(line: str) -> int:
    # A tab counts as four columns; mixed indentation only needs a consistent order here.
    return len(line.expandtabs(4)) - len(line.expandtabs(4).lstrip())


def trim_to_block(prefix: str, text: str) -> str:
    """``text`` cut where the block enclosing the cursor ends (by indentation).

    The first line continues the cursor's line. A later line indented less than that line ends
    the block; one at the same indentation ends it too when the cursor's line opened a block
    (a closing bracket there is kept, as the block's last line).
    """
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    current = prefix.rpartition("\n")[2] + lines[0]
    opened = current.rstrip().endswith(_OPENERS)
    if current.strip():
        base = _indent(current)
    else:
        # The cursor is on a blank line: the first completed line sets the level.
        first = next((line for line in lines[1:] if line.strip()), None)
        if first is None:
            return text
        base = _indent(first)
    kept = [lines[0]]
    for line in lines[1:]:
        if not line.strip():
            kept.append(line)
            continue
        indent = _indent(line)
        if indent < base or (indent == base and opened):
            if indent == base and line.lstrip().startswith(_CLOSERS):
                kept.append(line)
            break
        kept.append(line)
    else:
        return text
    # Blank lines before the cut belong to what follows the block.
    while len(kept) > 1 and not kept[-1].strip():
        kept.pop()
    return "\n".join(kept)


def trim_to_lines(text: str, max_lines: int) -> str:
    """The first ``max_lines`` lines of ``text``."""
    lines = text.split("\n")
    return text if len(lines) <= max_lines else "\n".join(lines[:max_lines])


def repeats_suffix(text: str, suffix: str) -> bool:
    """Whether ``text`` adds nothing but what already follows the cursor."""
    core = text.strip()
    return bool(core) and suffix.lstrip().startswith(core)


def postprocess(
    text: str, *, prefix: str, suffix: str, stop: tuple[str, ...], rules: PostProcess
) -> Processed:
    """Apply an arm's post-processing to a completion (see the module doc)."""
    cut, stopped = cut_at_stop(text, stop)
    trimmed_text = cut
    if rules.trim == "block":
        trimmed_text = trim_to_block(prefix, cut)
    elif rules.trim == "lines":
        trimmed_text = trim_to_lines(cut, rules.max_lines)
    trimmed = trimmed_text != cut
    if rules.drop_if_repeats_suffix and repeats_suffix(trimmed_text, suffix):
        return Processed("", stopped=stopped, trimmed=trimmed, dropped=True)
    return Processed(trimmed_text, stopped=stopped, trimmed=trimmed)


def _partial_stop_len(text: str, stop: tuple[str, ...]) -> int:
    """Length of the longest end of ``text`` that begins some stop string."""
    longest = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:n]):
                longest = n
                break
    return longest


class StreamingPostprocessor:
    """The same post-processing applied to a completion arriving in pieces.

    Text is released only once no later piece can change it: a possible start of a stop string,
    trailing whitespace (block trimming drops trailing blank lines) and anything that so far
    only repeats the suffix are held back. ``done`` turns true when a stop string or the end
    of the block was seen; the caller then stops the backend.
    """

    def __init__(
        self, *, prefix: str, suffix: str, stop: tuple[str, ...], rules: PostProcess
    ) -> None:
        self._prefix = prefix
        self._suffix = suffix
        self._suffix_start = suffix.lstrip()
        self._stop = stop
        self._rules = rules
        self._raw = ""
        self._sent = ""
        self.done = False
        self.result: Processed | None = None

    @property
    def sent(self) -> str:
        """Everything released so far."""
        return self._sent

    def feed(self, piece: str) -> str:
        """Take the next piece; return the text that can be released now."""
        if self.done:
            return ""
        self._raw += piece
        cut, stopped = cut_at_stop(self._raw, self._stop)
        if stopped:
            return self._finish(cut, stopped=True)
        safe = cut[: len(cut) - _partial_stop_len(cut, self._stop)]
        trimmed = self._trim(safe)
        if trimmed != safe:
            return self._finish(cut, stopped=False)
        committed = trimmed.rstrip()
        if self._rules.drop_if_repeats_suffix and self._suffix_start.startswith(committed.strip()):
            return ""
        return self._release(committed)

    def finish(self) -> str:
        """The backend is done: return what is left to release."""
        if self.done:
            return ""
        cut, stopped = cut_at_stop(self._raw, self._stop)
        return self._finish(cut, stopped=stopped)

    def _trim(self, text: str) -> str:
        if self._rules.trim == "block":
            return trim_to_block(self._prefix, text)
        if self._rules.trim == "lines":
            return trim_to_lines(text, self._rules.max_lines)
        return text

    def _finish(self, cut: str, *, stopped: bool) -> str:
        self.done = True
        result = postprocess(
            cut, prefix=self._prefix, suffix=self._suffix, stop=(), rules=self._rules
        )
        self.result = dataclasses.replace(result, stopped=stopped or result.stopped)
        return self._release(result.text)

    def _release(self, text: str) -> str:
        if len(text) <= len(self._sent) or not text.startswith(self._sent):
            return ""
        delta = text[len(self._sent) :]
        self._sent = text
        return delta
