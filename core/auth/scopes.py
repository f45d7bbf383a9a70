"""What an API key may do. Its own module (standard library only) so the command line can offer
the scopes as an option without loading the ORM."""

from __future__ import annotations

import enum


class Scope(enum.StrEnum):
    """What a key may do: send events, request completions, or administer the platform.

    ``evaluate`` lets a ``serve`` key ask the gateway for a named variant instead of the
    user's assigned arm (offline backtests); ``admin`` may do that too.
    """

    INGEST = "ingest"
    SERVE = "serve"
    ADMIN = "admin"
    EVALUATE = "evaluate"
