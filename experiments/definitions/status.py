"""The life cycle of an experiment. Its own module (standard library only) so the command line
can offer the statuses as an option without loading the definitions' validation."""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    """Life cycle of an experiment. Only ``running`` experiments assign users."""

    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    SHIPPED = "shipped"
