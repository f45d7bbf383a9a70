"""Cutting the code around the cursor to an arm's token budget.

The budget is split ``prefix_share`` / ``1 - prefix_share`` between the code before and after
the cursor (CodeCompose keeps 70/30); a side that needs less than its share gives the rest to
the other. The prefix keeps its end and the suffix its start: the code nearest the cursor.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

CountTokens = Callable[[str], int]


@dataclasses.dataclass(frozen=True, slots=True)
class CutContext:
    """The prefix and suffix that fit, and their token counts."""

    prefix: str
    suffix: str
    prefix_tokens: int
    suffix_tokens: int


def split_budget(
    budget: int, prefix_tokens: int, suffix_tokens: int, prefix_share: float
) -> tuple[int, int]:
    """Tokens allowed for the prefix and the suffix; unused share goes to the other side."""
    if budget < 0:
        raise ValueError(f"budget must not be negative, got {budget}")
    if not 0.0 < prefix_share < 1.0:
        raise ValueError(f"prefix_share must be in (0, 1), got {prefix_share}")
    prefix_quota = int(budget * prefix_share)
    suffix_quota = budget - prefix_quota
    if prefix_tokens < prefix_quota:
        suffix_quota += prefix_quota - prefix_tokens
        prefix_quota = prefix_tokens
    elif suffix_tokens < suffix_quota:
        prefix_quota += suffix_quota - suffix_tokens
        suffix_quota = suffix_tokens
    return min(prefix_quota, prefix_tokens), min(suffix_quota, suffix_tokens)


def keep_tail(text: str, max_tokens: int, count: CountTokens) -> tuple[str, int]:
    """The longest end of ``text`` that takes at most ``max_tokens`` tokens, and its count."""
    return _keep(text, max_tokens, count, tail=True)


def keep_head(text: str, max_tokens: int, count: CountTokens) -> tuple[str, int]:
    """The longest start of ``text`` that takes at most ``max_tokens`` tokens, and its count."""
    return _keep(text, max_tokens, count, tail=False)


def _keep(text: str, max_tokens: int, count: CountTokens, *, tail: bool) -> tuple[str, int]:
    if max_tokens <= 0 or not text:
        return "", 0
    total = count(text)
    if total <= max_tokens:
        return text, total
    # Binary search on the number of characters kept: token counts grow (almost) monotonically
    # with the length of a contiguous piece, and each probe is one tokenizer call.
    low, high = 0, len(text)
    best, best_tokens = "", 0
    while low < high:
        mid = (low + high + 1) // 2
        piece = text[len(text) - mid :] if tail else text[:mid]
        tokens = count(piece)
        if tokens <= max_tokens:
            best, best_tokens = piece, tokens
            low = mid
        else:
            high = mid - 1
    return best, best_tokens


def cut_to_budget(
    prefix: str, suffix: str, *, budget: int, prefix_share: float, count: CountTokens
) -> CutContext:
    """``prefix`` and ``suffix`` cut to ``budget`` tokens together (see the module doc)."""
    prefix_tokens = count(prefix) if prefix else 0
    suffix_tokens = count(suffix) if suffix else 0
    if prefix_tokens + suffix_tokens <= budget:
        return CutContext(prefix, suffix, prefix_tokens, suffix_tokens)
    prefix_quota, suffix_quota = split_budget(budget, prefix_tokens, suffix_tokens, prefix_share)
    kept_prefix, kept_prefix_tokens = (
        (prefix, prefix_tokens)
        if prefix_quota >= prefix_tokens
        else keep_tail(prefix, prefix_quota, count)
    )
    kept_suffix, kept_suffix_tokens = (
        (suffix, suffix_tokens)
        if suffix_quota >= suffix_tokens
        else keep_head(suffix, suffix_quota, count)
    )
    return CutContext(kept_prefix, kept_suffix, kept_prefix_tokens, kept_suffix_tokens)


def fit_to_context(
    budget: int, *, context_length: int | None, template_tokens: int, max_tokens: int
) -> int:
    """The arm's prefix + suffix budget, cut so that the rendered prompt (the template's own
    tokens included) and the completion fit the model's context.

    Without this a model with a short context drops the start of the prompt, which is the
    ``<fim_prefix>`` sentinel and the code nearest it: the FIM layout itself.
    """
    if context_length is None:
        return budget
    return max(0, min(budget, context_length - template_tokens - max_tokens))
