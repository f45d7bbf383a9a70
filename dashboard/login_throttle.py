"""Failed dashboard logins, counted in one store per process and shared by every session.

Each failure is counted under several keys: the name typed, the client's address (when
Streamlit knows it) and every login together. A key's first failures are free; from the
``backoff_after``-th on, each failure doubles the wait before that key may try again, up to
``max_delay_s`` (the lock-out). A key with no failure for ``forget_after_s`` starts over. A
success erases nothing: a viewer who knows the viewer password must not reset the count of
their guesses at the admin one.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

# (kind, value): ("user", "ada"), ("address", "203.0.113.7"), ("all", "").
LoginKey = tuple[str, str]

# A larger table is swept of the records it no longer needs on the next failure. The "all" key
# keeps failures to about one per 10 s after the first 50, and a record is forgotten an hour
# after its last failure, so fewer than a thousand are ever alive: the sweep bounds memory
# without a size limit that an attacker could flush their own records past.
SWEEP_AT_RECORDS = 1024
# An IPv6 client usually holds a whole /64: one key per /64, not per address.
IPV6_PREFIX = 64


@dataclasses.dataclass(frozen=True)
class BackoffPolicy:
    """How one kind of key is throttled (see the module's docstring)."""

    backoff_after: int
    base_delay_s: float
    max_delay_s: float
    forget_after_s: float

    def __post_init__(self) -> None:
        # Forgetting a key sooner than its longest wait would end a lock-out early.
        if self.forget_after_s < self.max_delay_s:
            raise ValueError("forget_after_s must be at least max_delay_s")

    def delay_s(self, failures: int) -> float:
        """How long a key with ``failures`` failures waits after its latest one."""
        if failures < self.backoff_after:
            return 0.0
        # The exponent is capped: 2**64 s is past any max_delay_s, and a float stays finite.
        doublings = min(failures - self.backoff_after, 64)
        return float(min(self.base_delay_s * 2.0**doublings, self.max_delay_s))


# Per name and per address: the 5th failure costs 1 s, the 6th 2 s, ... the 15th and later 15
# minutes each (2**10 s is past the cap). One address guesses at most ~100 passwords a day.
PER_KEY_POLICY = BackoffPolicy(
    backoff_after=5, base_delay_s=1.0, max_delay_s=15 * 60.0, forget_after_s=60 * 60.0
)
# Every login together, against an attacker with many addresses and names: 50 free failures,
# then at most one guess per 10 s overall (~8,600 a day). The cap is short because this key
# also delays the people who know their password while an attack lasts.
ALL_LOGINS_POLICY = BackoffPolicy(
    backoff_after=50, base_delay_s=1.0, max_delay_s=10.0, forget_after_s=60 * 60.0
)
DEFAULT_POLICIES: Mapping[str, BackoffPolicy] = {
    "user": PER_KEY_POLICY,
    "address": PER_KEY_POLICY,
    "all": ALL_LOGINS_POLICY,
}


@dataclasses.dataclass(frozen=True)
class Attempt(Generic[T]):
    """What one login attempt came to: ``value`` when the check passed; ``retry_after_s`` > 0
    when the attempt was refused without being checked."""

    value: T | None
    retry_after_s: float = 0.0

    @property
    def throttled(self) -> bool:
        """Whether the attempt was refused without checking the password."""
        return self.retry_after_s > 0


@dataclasses.dataclass
class _Record:
    failures: int
    last_failure: float


def login_keys(name: str, address: str | None) -> tuple[LoginKey, ...]:
    """The keys an attempt is counted under: the name typed, the address if known, and all."""
    keys: list[LoginKey] = [("user", name.strip().casefold())]
    if address:
        keys.append(("address", _address_key(address)))
    keys.append(("all", ""))
    return tuple(keys)


def _address_key(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/{IPV6_PREFIX}", strict=False))
    return str(ip)


class LoginThrottle:
    """The failures of every key, behind one lock; ``clock`` is injectable for the tests."""

    def __init__(
        self,
        policies: Mapping[str, BackoffPolicy] = DEFAULT_POLICIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._policies = dict(policies)
        self._clock = clock
        self._lock = threading.Lock()
        self._records: dict[LoginKey, _Record] = {}

    def attempt(self, keys: Sequence[LoginKey], check: Callable[[], T | None]) -> Attempt[T]:
        """Run ``check`` unless a key must wait; a None from it is a failure of every key.

        The check runs under the lock, so concurrent sessions cannot all pass the throttle
        before any failure is counted (it is a constant-time compare: microseconds).
        """
        with self._lock:
            now = self._clock()
            wait = max((self._wait_s(key, now) for key in keys), default=0.0)
            if wait > 0:
                return Attempt(None, retry_after_s=wait)
            value = check()
            if value is None:
                for key in keys:
                    self._fail(key, now)
            return Attempt(value)

    def retry_after_s(self, keys: Sequence[LoginKey]) -> float:
        """How long these keys must wait before the next attempt is checked (0: now)."""
        with self._lock:
            now = self._clock()
            return max((self._wait_s(key, now) for key in keys), default=0.0)

    def failures(self, key: LoginKey) -> int:
        """The failures counted against ``key`` now (0 once forgotten)."""
        with self._lock:
            record = self._live(key, self._clock())
            return record.failures if record is not None else 0

    def size(self) -> int:
        """How many keys have failures on record (forgotten ones until the next sweep)."""
        with self._lock:
            return len(self._records)

    def reset(self) -> None:
        """Forget every failure (tests; an operator's restart does the same)."""
        with self._lock:
            self._records.clear()

    def _policy(self, key: LoginKey) -> BackoffPolicy:
        return self._policies[key[0]]

    def _live(self, key: LoginKey, now: float) -> _Record | None:
        record = self._records.get(key)
        if record is None:
            return None
        if now - record.last_failure >= self._policy(key).forget_after_s:
            del self._records[key]
            return None
        return record

    def _wait_s(self, key: LoginKey, now: float) -> float:
        record = self._live(key, now)
        if record is None:
            return 0.0
        until = record.last_failure + self._policy(key).delay_s(record.failures)
        return max(until - now, 0.0)

    def _fail(self, key: LoginKey, now: float) -> None:
        record = self._live(key, now)
        if record is None:
            if len(self._records) >= SWEEP_AT_RECORDS:
                self._sweep(now)
            record = self._records[key] = _Record(failures=0, last_failure=now)
        record.failures += 1
        record.last_failure = now
        delay = self._policy(key).delay_s(record.failures)
        if delay > 0:
            # The name typed is not logged: people type their password there by mistake.
            kind, value = key
            whose = {"address": f"address {value}", "user": "one name"}.get(kind, "all logins")
            log.warning(
                "failed dashboard logins: %d for %s; the next is checked in %.0f s",
                record.failures,
                whose,
                delay,
            )

    def _sweep(self, now: float) -> None:
        for key in list(self._records):
            self._live(key, now)


# One per process, by design: every session and websocket of this server shares it, so opening
# more of them buys an attacker nothing. (A restart forgets it; several dashboard processes
# behind one address each count their own.)
LOGIN_THROTTLE = LoginThrottle()
