"""A per-key token bucket (collector and gateway): ``rate`` requests per second on average,
bursts up to ``burst``."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

# Buckets kept before idle ones are forgotten (a full bucket is the same as no bucket).
MAX_BUCKETS = 100_000


class RateLimiter:
    """Token buckets per key; ``acquire`` answers how long to wait, 0 when allowed now."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        # key -> (tokens, when they were counted)
        self._buckets: dict[Hashable, tuple[float, float]] = {}

    def acquire(self, key: Hashable) -> float:
        """Take a token for ``key``: 0.0 if there was one, else seconds until there is."""
        now = self._clock()
        tokens, then = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens >= 1.0:
            if len(self._buckets) >= MAX_BUCKETS and key not in self._buckets:
                self._buckets.clear()
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate
