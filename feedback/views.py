"""What the store returns: plain frozen values the dashboard and the CLI can show."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Literal

Dimension = Literal["arm", "language", "day"]


@dataclasses.dataclass(frozen=True, slots=True)
class ThemeView:
    """A codebook theme."""

    id: str
    name: str
    description: str
    examples: tuple[str, ...]
    polarity_leaning: str
    active: bool
    merged_into: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class TagView:
    """One theme on a comment; ``source`` is 'model' or 'human'."""

    theme_id: str
    theme_name: str
    confidence: float
    source: str
    needs_review: bool


@dataclasses.dataclass(frozen=True, slots=True)
class CommentView:
    """A feedback comment with its tags; ``feedback_id`` is the feedback event's ``event_id``.

    ``polarity`` and ``source`` are None while the comment is untagged.
    """

    feedback_id: uuid.UUID
    text: str
    rating: int | None
    rating_scale: str
    target: str
    language: str
    user_id: str
    client_ts: dt.datetime
    tags: tuple[TagView, ...]
    polarity: str | None
    polarity_confidence: float | None
    source: str | None
    needs_review: bool
    # The user's arm in the experiment filtered on, when one was.
    arm: str | None = None

    @property
    def tagged(self) -> bool:
        """Whether the tagger (or a person) has tagged the comment yet."""
        return self.source is not None

    @property
    def confidence(self) -> float | None:
        """How sure the tagging is: the lower of the top theme's and the polarity's confidence."""
        if self.polarity_confidence is None or not self.tags:
            return None
        return min(self.polarity_confidence, max(tag.confidence for tag in self.tags))


@dataclasses.dataclass(frozen=True, slots=True)
class GroupCounts:
    """Comments of one group (an arm, a language or a day) and how many carry each theme."""

    dimension: Dimension
    group: str
    comments: int
    tagged: int
    positive: int
    negative: int
    neutral: int
    # theme id -> comments of the group tagged with it (multi-label: these sum to ≥ tagged).
    themes: dict[str, int]

    @property
    def positive_share(self) -> float | None:
        """Share of tagged comments that are positive; None with no tagged comment."""
        return self.positive / self.tagged if self.tagged else None

    @property
    def negative_share(self) -> float | None:
        """Share of tagged comments that are negative; None with no tagged comment."""
        return self.negative / self.tagged if self.tagged else None


@dataclasses.dataclass(frozen=True, slots=True)
class ThemeCounts:
    """Theme and polarity counts per arm (when an experiment was given), language and day."""

    groups: tuple[GroupCounts, ...]

    def by(self, dimension: Dimension) -> list[GroupCounts]:
        """The groups of one dimension, in group order."""
        return [g for g in self.groups if g.dimension == dimension]
