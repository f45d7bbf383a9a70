"""Tokenizers of the local model: raw bytes, optionally with byte-pair merges, plus FIM sentinels.

Ids 0–255 are raw bytes, 256–260 the StarCoder sentinels, 261–263 unused (261 pads training
rows), and a learned merge ``i`` becomes id ``264 + i``. With no merges this is the plain byte
tokenizer. ``encode`` recognizes the sentinel strings in the text, so the gateway's rendered
StarCoder template works unchanged. Text is first cut into pieces (``PIECE_RE``: a newline, a word
with its leading space, a run of punctuation, indentation), and merges never cross pieces, so a
line break is always a token boundary.
"""

from __future__ import annotations

import codecs
import heapq
import json
import re
from collections import Counter
from collections.abc import Iterable
from itertools import pairwise
from pathlib import Path

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
PAD_ID = BYTE_VOCAB + len(SPECIAL_TOKENS)
FIRST_MERGE_ID = 264
# The byte tokenizer's vocabulary (embedding tables are padded to a multiple of 8).
VOCAB_SIZE = FIRST_MERGE_ID
TOKENIZER_FILE = "tokenizer.json"

_SPECIAL_RE = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")")
# Pieces merges stay within. Whitespace before a word is left one space short, so that the
# space joins the word (" return"); a newline is always a piece of its own.
PIECE_RE = re.compile(
    rb" ?[A-Za-z_][A-Za-z0-9_]*| ?[0-9]{1,3}| ?[^\sA-Za-z0-9_]+|\n|[^\S\n]+(?!\S)|[^\S\n]+"
)


class Tokenizer:
    """Bytes plus ordered byte-pair merges; ``Tokenizer()`` is the plain byte tokenizer."""

    def __init__(self, merges: Iterable[tuple[int, int]] = ()) -> None:
        self.merges = [(int(a), int(b)) for a, b in merges]
        self._rank = {pair: FIRST_MERGE_ID + i for i, pair in enumerate(self.merges)}
        self._bytes: list[bytes] = [bytes((i,)) for i in range(BYTE_VOCAB)]
        self._bytes += [b""] * (FIRST_MERGE_ID - BYTE_VOCAB)
        for a, b in self.merges:
            self._bytes.append(self._bytes[a] + self._bytes[b])
        self._cache: dict[bytes, tuple[int, ...]] = {}

    @property
    def vocab_size(self) -> int:
        """Embedding rows the model needs (padded to a multiple of 8)."""
        return -(-(FIRST_MERGE_ID + len(self.merges)) // 8) * 8

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes ``token_id`` stands for (empty for sentinels and padding)."""
        return self._bytes[token_id] if token_id < len(self._bytes) else b""

    def encode_bytes(self, data: bytes) -> list[int]:
        """Ids of raw ``data`` (no sentinel recognition)."""
        if not self.merges:
            return list(data)
        ids: list[int] = []
        cache = self._cache
        for piece in PIECE_RE.findall(data):
            cached = cache.get(piece)
            if cached is None:
                cached = cache[piece] = self._merge(piece)
            ids.extend(cached)
        return ids

    def _merge(self, piece: bytes) -> tuple[int, ...]:
        ids = list(piece)
        rank = self._rank
        while len(ids) > 1:
            # The earliest-learned merge among the adjacent pairs, as in training.
            best = min(pairwise(ids), key=lambda p: rank.get(p, 1 << 30))
            merged = rank.get(best)
            if merged is None:
                break
            ids = _replace_pair(ids, best, merged)
        return tuple(ids)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; sentinel strings become their single ids."""
        ids: list[int] = []
        for i, part in enumerate(_SPECIAL_RE.split(text)):
            if i % 2:
                ids.append(SPECIAL_IDS[part])
            elif part:
                ids.extend(self.encode_bytes(part.encode("utf-8")))
        return ids

    def count(self, text: str) -> int:
        """Number of tokens ``text`` encodes to."""
        return len(self.encode(text))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; invalid UTF-8 becomes U+FFFD."""
        decoder = StreamDecoder(self)
        return "".join(decoder.push(i) for i in ids) + decoder.flush()

    def heal(self, ids: list[int]) -> tuple[list[int], bytes]:
        """Token healing: the prompt without the last token of the text before the cursor.

        A prompt cut at the cursor often ends inside what the tokenizer would make one token
        (``return `` ends in a lone space that training joined to the next word as `` a``), a
        boundary the model rarely saw. The last token before ``<fim_suffix>`` (or at the end of
        a plain prompt) is removed and returned as bytes that the completion must start with
        (``candidates``); the caller drops them from the text. A newline, always a token
        boundary, and a sentinel are left alone, as is everything for the byte tokenizer.
        """
        if not self.merges:
            return ids, b""
        at = ids.index(FIM_SUFFIX_ID) - 1 if FIM_SUFFIX_ID in ids else len(ids) - 1
        if at < 0 or is_special(ids[at]) or self.token_bytes(ids[at]) == b"\n":
            return ids, b""
        return ids[:at] + ids[at + 1 :], self.token_bytes(ids[at])

    def candidates(self, healed: bytes) -> list[int]:
        """Tokens that may come next while ``healed`` is still owed: those starting with it, and
        those it starts with (the rest is then owed)."""
        return [
            i
            for i, b in enumerate(self._bytes)
            if b and (b.startswith(healed) or healed.startswith(b))
        ]

    def to_json(self) -> str:
        """The merges as JSON (what ``TOKENIZER_FILE`` holds)."""
        return json.dumps({"kind": "byte-bpe", "merges": self.merges})

    @classmethod
    def from_json(cls, text: str) -> Tokenizer:
        """Inverse of ``to_json``."""
        return cls(tuple(pair) for pair in json.loads(text)["merges"])

    @classmethod
    def for_checkpoint(cls, directory: Path) -> Tokenizer:
        """The tokenizer saved beside a checkpoint (bytes when there is none)."""
        path = (directory if directory.is_dir() else directory.parent) / TOKENIZER_FILE
        return cls.from_json(path.read_text()) if path.is_file() else cls()


def is_special(token_id: int) -> bool:
    """Whether ``token_id`` is a sentinel or padding rather than text."""
    return BYTE_VOCAB <= token_id < FIRST_MERGE_ID


class StreamDecoder:
    """Decodes ids one at a time, emitting text only on whole characters."""

    def __init__(self, tok: Tokenizer | None = None) -> None:
        self._tok = tok or BYTES
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Text completed by ``token_id`` (possibly empty while inside a multi-byte character)."""
        if not is_special(token_id):
            return self._utf8.decode(self._tok.token_bytes(token_id))
        pending = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        index = token_id - BYTE_VOCAB
        return pending + (SPECIAL_TOKENS[index] if index < len(SPECIAL_TOKENS) else "")

    def push_bytes(self, data: bytes) -> str:
        """Text completed by raw ``data`` (what is left of a token after token healing)."""
        return self._utf8.decode(data)

    def flush(self) -> str:
        """Whatever is pending at the end of the stream (an incomplete character → U+FFFD)."""
        text = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return text


BYTES = Tokenizer()


def encode(text: str) -> list[int]:
    """Byte-tokenizer ids of ``text``; sentinel strings become their single ids."""
    return BYTES.encode(text)


def decode(ids: Iterable[int]) -> str:
    """Byte-tokenizer text of ``ids``; invalid UTF-8 becomes U+FFFD."""
    return BYTES.decode(ids)


def count(text: str) -> int:
    """Number of byte-tokenizer tokens ``text`` encodes to."""
    return BYTES.count(text)


def _replace_pair(ids: list[int], pair: tuple[int, int], merged: int) -> list[int]:
    """``ids`` with every non-overlapping occurrence of ``pair`` (left to right) made ``merged``."""
    out: list[int] = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(merged)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def learn_merges(
    texts: Iterable[bytes], n_merges: int, *, min_count: int = 2
) -> list[tuple[int, int]]:
    """Byte-pair merges learned from ``texts``: repeatedly merge the most frequent adjacent pair.

    Pair counts are kept incrementally (only the pieces containing the merged pair are
    recounted), with a max-heap of counts whose stale entries are skipped when popped.
    """
    pieces: Counter[bytes] = Counter()
    for text in texts:
        pieces.update(PIECE_RE.findall(text))
    words = [list(p) for p in pieces]
    freqs = list(pieces.values())
    pair_count: Counter[tuple[int, int]] = Counter()
    where: dict[tuple[int, int], set[int]] = {}
    for w, (word, freq) in enumerate(zip(words, freqs, strict=True)):
        for pair in pairwise(word):
            pair_count[pair] += freq
            where.setdefault(pair, set()).add(w)
    heap = [(-c, pair) for pair, c in pair_count.items()]
    heapq.heapify(heap)
    merges: list[tuple[int, int]] = []
    while heap and len(merges) < n_merges:
        neg, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -neg:
            continue  # stale: the count changed after this entry was pushed
        if -neg < min_count:
            break
        new_id = FIRST_MERGE_ID + len(merges)
        merges.append(pair)
        touched: set[tuple[int, int]] = set()
        for w in where.pop(pair, set()):
            word, freq = words[w], freqs[w]
            for old in pairwise(word):
                pair_count[old] -= freq
                touched.add(old)
            out = words[w] = _replace_pair(word, pair, new_id)
            for new in pairwise(out):
                pair_count[new] += freq
                where.setdefault(new, set()).add(w)
                touched.add(new)
        pair_count.pop(pair, None)
        for p in touched:
            c = pair_count.get(p, 0)
            if c > 0:
                heapq.heappush(heap, (-c, p))
            else:
                pair_count.pop(p, None)
    return merges
