"""What every page is given: the database and who is looking."""

from __future__ import annotations

import dataclasses

from dashboard.auth import Identity


@dataclasses.dataclass(frozen=True)
class PageContext:
    """The database URL (the cache key of every query) and the logged-in identity."""

    database_url: str
    identity: Identity
