"""Rate limiter shared by every worker process on every machine, keyed by credential.

Built on ``pyrate-limiter``'s PostgreSQL bucket: a sliding-window log per key in the warehouse
PostgreSQL, checked and appended under a table lock, timed by the database clock (so workers on
several machines agree), with several rates per key (e.g. 2/second and 500/hour). A sliding
window lets a burst use an hourly quota at once and never lets any window of the provider's
length hold more calls than its limit. Short windows get a small safety margin so that network
jitter cannot squeeze two calls into the provider's second.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import weakref
from dataclasses import dataclass

from psycopg_pool import ConnectionPool
from pyrate_limiter import Duration, Limiter, Rate
from pyrate_limiter.buckets.postgres import PostgresBucket

SHORT_WINDOW_MARGIN = 0.05  # widen windows of 10 s or less by 5% against jitter


@dataclass(frozen=True)
class RateSpec:
    """`limit` calls per `per_seconds` seconds."""

    limit: int
    per_seconds: float

    def to_rate(self) -> Rate:
        window_ms = self.per_seconds * Duration.SECOND
        if self.per_seconds <= 10:
            window_ms *= 1 + SHORT_WINDOW_MARGIN
        return Rate(self.limit, int(window_ms))

    def __str__(self) -> str:
        return f"{self.limit}/{self.per_seconds:g}s"


def per_second(limit: float) -> RateSpec:
    """A per-second rate; fractional limits (0.5/s) become whole calls over a longer window."""
    if limit >= 1:
        return RateSpec(int(limit), 1.0)
    return RateSpec(1, 1.0 / limit)


def per_hour(limit: int, hour_seconds: float = 3600.0) -> RateSpec:
    return RateSpec(limit, hour_seconds)


HOUR_SECONDS_ENV = "PACELINE_RATE_HOUR_SECONDS"
HOURLY_MARGIN = 0.01


def hour_seconds() -> float:
    """Length of a quota's hour; PACELINE_RATE_HOUR_SECONDS shortens it for tests and benchmarks."""
    return float(os.environ.get(HOUR_SECONDS_ENV) or 3600.0)


def hourly_quota(
    calls_per_hour: int, calls_per_second: float | None = None, *, min_margin_s: float = 0.0
) -> tuple[RateSpec, ...]:
    """A credential's hourly quota (and optional per-second cap) for the limiter.

    The window is 1% longer than the provider's hour (at least `min_margin_s`): the limiter stamps
    a call when it admits it, the provider when it arrives a little later, and that gap must not
    let the provider count one call too many in its hour.
    """
    hour = hour_seconds()
    rates = [per_hour(int(calls_per_hour), hour + max(min_margin_s, hour * HOURLY_MARGIN))]
    if calls_per_second:
        rates.append(per_second(float(calls_per_second)))
    return tuple(rates)


class RateLimitTimeout(Exception):
    """The quota stayed spent for longer than the caller agreed to wait."""


def bucket_table(key: str) -> str:
    """A table name for a key; hashed because keys contain credentials, which must not show."""
    return "pl_" + hashlib.sha256(key.encode()).hexdigest()[:24]


class SharedRateLimiter:
    """Blocks each caller until its key's rates admit one more call."""

    _pools: dict[str, ConnectionPool] = {}
    _pools_lock = threading.Lock()
    _instances: weakref.WeakSet[SharedRateLimiter] = weakref.WeakSet()

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._limiters: dict[tuple[str, tuple[RateSpec, ...]], Limiter] = {}
        self._lock = threading.Lock()
        self._instances.add(self)

    def close(self) -> None:
        """Stop the buckets' background leak threads."""
        with self._lock:
            for limiter in self._limiters.values():
                limiter.close()
            self._limiters.clear()

    @classmethod
    def close_all(cls) -> None:
        """Close every limiter and connection pool of this process (before its database goes away)."""
        for instance in list(cls._instances):
            instance.close()
        with cls._pools_lock:
            for pool in cls._pools.values():
                pool.close()
            cls._pools.clear()

    @classmethod
    def _pool(cls, dsn: str) -> ConnectionPool:
        with cls._pools_lock:
            pool = cls._pools.get(dsn)
            if pool is None or pool.closed:
                pool = ConnectionPool(dsn, min_size=1, max_size=4, open=True, name="paceline-limiter")
                cls._pools[dsn] = pool
            return pool

    def _limiter(self, key: str, rates: tuple[RateSpec, ...]) -> Limiter:
        with self._lock:
            limiter = self._limiters.get((key, rates))
            if limiter is None:
                ordered = sorted((r.to_rate() for r in rates), key=lambda r: r.interval)
                bucket = PostgresBucket(self._pool(self.dsn), bucket_table(key), ordered)
                limiter = Limiter(bucket)
                self._limiters[(key, rates)] = limiter
            return limiter

    def acquire(self, key: str, rates: tuple[RateSpec, ...], max_wait_s: float | None = None) -> float:
        """Wait until one call on `key` is allowed and record it; return the seconds waited."""
        if not rates:
            return 0.0
        limiter = self._limiter(key, rates)
        started = time.monotonic()
        # pyrate's own wait loop is bounded by its timeout; loop so that waits of an hour work too.
        while True:
            remaining = None if max_wait_s is None else max_wait_s - (time.monotonic() - started)
            if remaining is not None and remaining <= 0:
                raise RateLimitTimeout(f"rate limit for {bucket_table(key)} still spent after {max_wait_s:.0f}s")
            timeout = 300.0 if remaining is None else min(300.0, remaining)
            if limiter.try_acquire(bucket_table(key), blocking=True, timeout=timeout):
                return time.monotonic() - started
