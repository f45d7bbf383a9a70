"""The feedback package's own errors; callers map them to a 4xx or a CLI message."""

from __future__ import annotations


class FeedbackInputError(ValueError):
    """Bad input, naming the field and the problem."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class UnknownFeedbackError(LookupError):
    """No feedback comment has this id."""


class UnknownThemeError(LookupError):
    """No (active) theme has this id."""
