"""Byte-level tokenizer with StarCoder-style FIM sentinels.

Ids 0–255 are raw bytes; the sentinels follow. ``encode`` recognizes the sentinel strings in the
text, so the gateway's rendered StarCoder template works unchanged.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable

FIM_PREFIX = "<fim_prefix>"
FIM_SUFFIX = "<fim_suffix>"
FIM_MIDDLE = "<fim_middle>"
FILE_SEP = "<file_sep>"
END_OF_TEXT = "<|endoftext|>"
SPECIAL_TOKENS: tuple[str, ...] = (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE, FILE_SEP, END_OF_TEXT)

BYTE_VOCAB = 256
SPECIAL_IDS: dict[str, int] = {tok: BYTE_VOCAB + i for i, tok in enumerate(SPECIAL_TOKENS)}
FIM_PREFIX_ID = SPECIAL_IDS[FIM_PREFIX]
FIM_SUFFIX_ID = SPECIAL_IDS[FIM_SUFFIX]
FIM_MIDDLE_ID = SPECIAL_IDS[FIM_MIDDLE]
FILE_SEP_ID = SPECIAL_IDS[FILE_SEP]
EOT_ID = SPECIAL_IDS[END_OF_TEXT]
# The model's embedding table is padded to a multiple of 8 for tidy matrix shapes.
VOCAB_SIZE = 264

_SPECIAL_RE = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")")


def encode(text: str) -> list[int]:
    """Token ids of ``text``; sentinel strings become their single ids."""
    ids: list[int] = []
    for i, part in enumerate(_SPECIAL_RE.split(text)):
        if i % 2:
            ids.append(SPECIAL_IDS[part])
        elif part:
            ids.extend(part.encode("utf-8"))
    return ids


def is_special(token_id: int) -> bool:
    """Whether ``token_id`` is a sentinel (or padding) rather than a byte."""
    return token_id >= BYTE_VOCAB


def decode(ids: Iterable[int]) -> str:
    """Text of ``ids``; invalid UTF-8 becomes U+FFFD."""
    decoder = StreamDecoder()
    return "".join(decoder.push(i) for i in ids) + decoder.flush()


def count(text: str) -> int:
    """Number of tokens ``text`` encodes to."""
    return len(encode(text))


class StreamDecoder:
    """Decodes ids one at a time, emitting text only on whole characters."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Text completed by ``token_id`` (possibly empty while inside a multi-byte character)."""
        if token_id < BYTE_VOCAB:
            return self._utf8.decode(bytes((token_id,)))
        pending = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        index = token_id - BYTE_VOCAB
        return pending + (SPECIAL_TOKENS[index] if index < len(SPECIAL_TOKENS) else "")

    def flush(self) -> str:
        """Whatever is pending at the end of the stream (an incomplete character → U+FFFD)."""
        text = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return text
