"""Checking a request's ``Authorization: Bearer`` key on the hot path, with a short cache.

Keys that exist and keys that do not are cached apart, each in its own bounded LRU, so a flood
of random keys cannot evict the keys in use (a single dict, emptied when full, let 10,000
random keys send every real key back to the database). Keys this process has not seen must be
well formed to be looked up at all, and their lookups are bounded in rate and in number at
once: a flood of well-formed random keys costs the database a few queries a second, not one a
request, and cannot take the pool's connections from the work.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import re
import time
from collections import OrderedDict
from collections.abc import Callable

import psycopg
from psycopg_pool import AsyncConnectionPool

from core.auth.keys import KEY_PREFIX, hash_key
from core.auth.scopes import Scope

# The shape generate_secret() makes: the prefix and token_urlsafe(32), 43 URL-safe characters.
_WELL_FORMED = re.compile(re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]{43}")


class AuthError(Exception):
    """A request that may not proceed; ``status`` is 401 (who are you?) or 403 (not allowed)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class KeyLookupThrottled(psycopg.OperationalError):
    """Too many keys this process has not seen are being looked up; retry later.

    An OperationalError, like the database being down: to the client both mean "the key store
    cannot answer right now", and every caller already answers that with 503 + Retry-After.
    """


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """The key a request was made with."""

    key_id: int
    name: str
    scopes: frozenset[str]
    revoked: bool
    # The developer a personal key belongs to; None for a shared key.
    user_id: str | None = None


_LOOKUP = (
    "SELECT id, name, scopes, revoked_at IS NOT NULL, user_id FROM api_keys WHERE key_hash = %s"
)


class KeyVerifier:
    """Resolves bearer keys to principals, caching each answer for ``ttl_s`` seconds.

    The cache is what keeps a database round trip off every request; its TTL is also how long a
    revocation (or a new key) can take to be seen, so keep it at seconds. ``max_entries`` keys
    that exist and ``max_misses`` that do not are cached, each least recently used first out.
    Lookups of keys not cached as existing ("misses") are limited to ``miss_rate_per_s`` (a
    token bucket of ``miss_burst``) and ``max_concurrent_misses`` at once; past either, the
    request gets KeyLookupThrottled. Concurrent lookups of one key share one query.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        ttl_s: float = 5.0,
        max_entries: int = 10_000,
        max_misses: int = 10_000,
        miss_rate_per_s: float = 20.0,
        miss_burst: int = 100,
        max_concurrent_misses: int = 2,
        clock: Callable[[], float] = time.monotonic,
        on_count: Callable[[str], None] | None = None,
    ) -> None:
        if min(max_entries, max_misses, miss_burst, max_concurrent_misses) < 1:
            raise ValueError("cache sizes, miss_burst and max_concurrent_misses must be >= 1")
        if miss_rate_per_s <= 0:
            raise ValueError("miss_rate_per_s must be positive")
        self._pool = pool
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._max_misses = max_misses
        self._miss_rate_per_s = miss_rate_per_s
        self._miss_burst = float(miss_burst)
        self._max_concurrent_misses = max_concurrent_misses
        self._clock = clock
        # key hash -> (expiry, principal). An expired entry stays until refreshed or evicted:
        # it marks a key as known, whose refresh is not a miss.
        self._known: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        # key hash -> expiry, for keys the database did not have.
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._lookups: dict[str, asyncio.Task[Principal | None]] = {}
        self._miss_tokens = self._miss_burst
        self._miss_counted_at = clock()
        self._misses_in_flight = 0
        # Counters, for metrics and tests: queries made, and misses refused unasked;
        # ``on_count("query" | "throttled")`` reports each to the service's metrics.
        self.queries = 0
        self.throttled = 0
        self._on_count = on_count or (lambda _outcome: None)

    async def authenticate(self, authorization: str | None, scope: Scope) -> Principal:
        """The principal behind an Authorization header, if it holds ``scope``."""
        secret = _bearer_secret(authorization)
        if not _WELL_FORMED.fullmatch(secret):
            raise AuthError(401, f"unknown API key (keys are {KEY_PREFIX!r} and 43 characters)")
        principal = await self._lookup(hash_key(secret))
        if principal is None:
            raise AuthError(401, "unknown API key")
        if principal.revoked:
            raise AuthError(403, f"API key {principal.name!r} has been revoked")
        if scope.value not in principal.scopes:
            raise AuthError(403, f"API key {principal.name!r} lacks the {scope.value!r} scope")
        return principal

    async def key_id(self, authorization: str | None, scope: Scope) -> int | None:
        """The id of the key if ``authenticate`` accepts it, else None (whatever the reason)."""
        try:
            return (await self.authenticate(authorization, scope)).key_id
        except (AuthError, psycopg.Error):
            return None

    async def _lookup(self, key_hash: str) -> Principal | None:
        now = self._clock()
        known = self._known.get(key_hash)
        if known is not None:
            if known[0] > now:
                self._known.move_to_end(key_hash)
                return known[1]
        else:
            expiry = self._unknown.get(key_hash)
            if expiry is not None and expiry > now:
                return None
        lookup = self._lookups.get(key_hash)
        if lookup is None:
            miss = known is None
            if miss:
                self._take_miss(now)
            lookup = asyncio.create_task(self._query(key_hash, now=now))
            lookup.add_done_callback(functools.partial(self._looked_up, key_hash, miss))
            self._lookups[key_hash] = lookup
        # Shielded: a request cancelled (its client gone) leaves the answer to be cached.
        return await asyncio.shield(lookup)

    def _take_miss(self, now: float) -> None:
        elapsed = max(0.0, now - self._miss_counted_at)
        tokens = self._miss_tokens + elapsed * self._miss_rate_per_s
        self._miss_tokens = min(self._miss_burst, tokens)
        self._miss_counted_at = now
        if self._misses_in_flight >= self._max_concurrent_misses or self._miss_tokens < 1.0:
            self.throttled += 1
            self._on_count("throttled")
            raise KeyLookupThrottled("too many unknown API keys are being checked; retry later")
        self._miss_tokens -= 1.0
        self._misses_in_flight += 1

    def _looked_up(self, key_hash: str, miss: bool, task: asyncio.Task[Principal | None]) -> None:
        del self._lookups[key_hash]
        if miss:
            self._misses_in_flight -= 1
        if not task.cancelled():
            task.exception()  # retrieved, so a lookup whose requests all went away logs nothing

    async def _query(self, key_hash: str, *, now: float) -> Principal | None:
        self.queries += 1
        self._on_count("query")
        async with self._pool.connection() as conn:
            cur = await conn.execute(_LOOKUP, (key_hash,))
            row = await cur.fetchone()
        # Counted from before the query, so an answer is never trusted past the TTL.
        expiry = now + self._ttl_s
        if row is None:
            self._known.pop(key_hash, None)
            self._unknown[key_hash] = expiry
            self._unknown.move_to_end(key_hash)
            if len(self._unknown) > self._max_misses:
                self._unknown.popitem(last=False)
            return None
        key_id, name, scopes, revoked, user_id = row
        principal = Principal(key_id, name, frozenset(scopes), revoked, user_id)
        self._unknown.pop(key_hash, None)
        self._known[key_hash] = (expiry, principal)
        self._known.move_to_end(key_hash)
        if len(self._known) > self._max_entries:
            self._known.popitem(last=False)
        return principal


def _bearer_secret(authorization: str | None) -> str:
    if not authorization:
        raise AuthError(401, "missing Authorization header; send 'Authorization: Bearer <api key>'")
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise AuthError(401, "Authorization header must be 'Bearer <api key>'")
    return secret.strip()
