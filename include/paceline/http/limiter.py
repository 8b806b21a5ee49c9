"""Rate limiter shared by every worker process on every machine, keyed by credential.

Built on ``pyrate-limiter``'s PostgreSQL bucket: a sliding-window log per key in the warehouse
PostgreSQL, checked and appended under a table lock, with several rates per key (e.g. 2/second
and 500/hour). A sliding window lets a burst use an hourly quota at once and never lets any
window of the provider's length hold more calls than its limit. Short windows get a small safety
margin so that network jitter cannot squeeze two calls into the provider's second.

:class:`LockedClockPostgresBucket` stamps each call with the database clock read *inside* the
table lock. Stock pyrate stamps a call before it takes the lock and, after a wait, advances the
stamp by the time it meant to sleep rather than the time that passed; under contention a call
was then logged earlier than it happened, and the provider, counting arrivals, saw one call too
many in its window (measured: 11-15 throttles per benchmark run, 0 with this bucket).

A *settled* rate (The Racing API's 2/s) keeps no margin at all: a call in flight holds its slot
(it is logged IN_FLIGHT_HOLD_MS ahead, and callers behind it look again every few ms), and once
its answer's headers are back (ApiSession reports it) it is logged at that moment. The
provider counted the call before answering it, so the log never shows a call earlier than the
provider saw it, however late the call went out or the provider counted it: no throttle from
jitter or a starved process. The price is the provider's answer time instead of a margin, at
most `limit` calls per (window + answer time); to stay near it, a caller takes its slot up to
ADMIT_AHEAD_MS before it opens and sends when it does, so the limiter's own round trip is not
on the call's way out (bench/racing_backfill.py: 98.5% of that ceiling).

A call that has to wait a while waits in its key's *waiting room*, a PostgreSQL advisory lock
held on a connection of its own: one waiter per key at a time, visible to every process
(:meth:`SharedRateLimiter.has_waiter`), and released by the server if the waiting process dies.
A task that has done no work yet starts only when its first calls fit at once; otherwise it
reschedules rather than queue behind that waiter, so a quota-bound credential holds about one
pool slot while other credentials' work waits.

Background work (a backfill) waits in a room of its own and lets a waiting scheduled call go
first, so a backfill that spends a credential's quota for hours does not starve the scheduled
syncs of the same credential; it also keeps a pace (:func:`background_pace`), so that it cannot
spend a whole hour's quota in one burst. A background task can also take the credential's *lane*
(:meth:`SharedRateLimiter.lane`): one lane holder per credential at a time, for work that
outlasts the quota anyway, where a second task on the credential would only take turns with
the first while holding a pool slot.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from airflow.sdk.exceptions import AirflowRescheduleException
from psycopg import sql
from psycopg.errors import LockNotAvailable, QueryCanceled
from psycopg_pool import ConnectionPool
from pyrate_limiter import Duration, Limiter, Rate, RateItem
from pyrate_limiter.abstracts.algorithm import ADMITTED, Decision
from pyrate_limiter.buckets.postgres import PostgresBucket

log = logging.getLogger(__name__)

SHORT_WINDOW_MARGIN = 0.05  # widen windows of 10 s or less by 5% against jitter
# pyrate sleeps the computed wait plus a buffer after a refused call; its default of 50 ms cost
# every waited call of a per-second cap 50 ms (2 calls per 1.1 s instead of per 1.05 s). A
# settled rate's wait is computed from the bucket's own stamps (+1 ms past the window's bound)
# and re-checked under the lock on waking, so it needs none; other rates keep pyrate's default.
SETTLED_WAIT_BUFFER_MS = 0
DEFAULT_WAIT_BUFFER_MS = 50
# A settled rate's call in flight is logged this far ahead of its admission, so it holds its slot
# until its answer is back (then it is logged at the answer's time). The session's read timeout
# is 60 s; a worker that dies mid-call leaves the slot held this long at most.
IN_FLIGHT_HOLD_MS = 70_000
IN_FLIGHT_POLL_MS = 5  # a caller behind a call in flight looks again this often
# A settled rate's caller wakes this much before its slot and takes it then, sending when it
# comes: the look (a database round trip, 5-20 ms here after a second asleep) is off the way out.
ADMIT_AHEAD_MS = 30


@dataclass(frozen=True)
class RateSpec:
    """`limit` calls per `per_seconds` seconds."""

    limit: int
    per_seconds: float
    exact: bool = False  # no jitter margin: a rate of our own (the background pace), not a provider's
    # The provider's window exactly, no margin: a call holds its slot while in flight and is then
    # logged at the time its answer came back (ApiSession settles it). See LockedClockPostgresBucket.
    settled: bool = False

    def to_rate(self) -> Rate:
        window_ms = self.per_seconds * Duration.SECOND
        if self.per_seconds <= 10 and not (self.exact or self.settled):
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
    A quota of 0 or below is refused (a negative one made the limiter busy-loop).
    """
    if calls_per_hour <= 0 or (calls_per_second is not None and calls_per_second < 0):
        raise ValueError(
            f"calls_per_hour must be above 0 and calls_per_second 0 or above (got {calls_per_hour}, {calls_per_second}):"
            " fix registrations.provider_integrations, or set NULL for the provider's default"
        )
    hour = hour_seconds()
    rates = [per_hour(int(calls_per_hour), hour + max(min_margin_s, hour * HOURLY_MARGIN))]
    if calls_per_second:
        rates.append(per_second(float(calls_per_second)))
    return tuple(rates)


class RateLimitTimeout(Exception):
    """The quota stayed spent for longer than the caller agreed to wait."""


RESCHEDULE_AFTER_S = 60.0  # a task that would wait longer than this (in a real hour) gives its slot back


def reschedule_after_s() -> float:
    """The wait beyond which a task reschedules rather than holds its slot; scaled with the quota hour."""
    return RESCHEDULE_AFTER_S * hour_seconds() / 3600.0


LONG_WAIT_LOG_S = 5.0  # a wait longer than this (in a real hour) is logged: key, calls used, next slot


def long_wait_log_s() -> float:
    """The wait beyond which acquire() logs at INFO; scaled with the quota hour."""
    return LONG_WAIT_LOG_S * hour_seconds() / 3600.0


LANE_RECHECK_S = 300.0  # a task waiting for a credential's lane looks again this often (in a real hour)


def lane_recheck_s() -> float:
    """How long a task that found its credential's lane taken stays up for reschedule; scaled like
    reschedule_after_s. Lane work lasts hours, so looking every minute would only churn workers."""
    return LANE_RECHECK_S * hour_seconds() / 3600.0


class QuotaSpent(AirflowRescheduleException):
    """A credential's quota cannot take a new task's first calls now: Airflow puts the task *up for
    reschedule* (no worker, no pool slot held) for `wait_s`, so that its slot serves another
    credential's work meanwhile. `in_use` says the quota is not spent for long but is being used
    by other tasks of the credential, which a second waiting task would not speed up. Raised only
    before a task has done any work."""

    def __init__(self, wait_s: float, *, in_use: bool = False) -> None:
        super().__init__(datetime.now(UTC) + timedelta(seconds=wait_s))
        self.wait_s = wait_s
        self.in_use = in_use

    def __str__(self) -> str:
        if self.in_use:
            return f"this credential's quota is in use by its other tasks; rescheduled in {self.wait_s:.0f}s"
        return f"quota spent: the next call is allowed in {self.wait_s:.0f}s; rescheduled for then"


def holder_name() -> str:
    """The application_name of a lock's connection: the Airflow task holding it (`paceline quota`
    shows it from pg_stat_activity), else the process. Never the key: it contains a login."""
    dag, task = os.environ.get("AIRFLOW_CTX_DAG_ID"), os.environ.get("AIRFLOW_CTX_TASK_ID")
    if not (dag and task):
        return f"paceline pid {os.getpid()}"
    index = os.environ.get("AIRFLOW_CTX_MAP_INDEX")
    suffix = f"[{index}]" if index not in (None, "", "-1") else ""
    return f"{dag}.{task}{suffix}"[-63:]  # PostgreSQL keeps 63 bytes


def bucket_table(key: str) -> str:
    """A table name for a key; hashed because keys contain credentials, which must not show."""
    return "pl_" + hashlib.sha256(key.encode()).hexdigest()[:24]


PER_SECOND_WINDOW_S = 2.0  # windows up to this long are per-second caps (0.5/s is 1 call per 2 s)


def short_window_s(rates: tuple[RateSpec, ...]) -> float:
    """The longest wait a per-second cap can cause; a longer wait is the quota's."""
    return max((r.to_rate().interval / 1000 for r in rates if r.per_seconds <= PER_SECOND_WINDOW_S), default=0.0)


def _advisory_lock_id(name: str) -> int:
    """A signed 64-bit advisory lock id, hashed like the table name (keys contain credentials)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def waiting_room_id(key: str, *, background: bool = False) -> int:
    """The advisory lock id of a key's waiting room, scheduled or background."""
    return _advisory_lock_id(("background-room:" if background else "waiting-room:") + key)


def lane_id(key: str) -> int:
    """The advisory lock id of a key's lane: one background task at a time holds it."""
    return _advisory_lock_id("lane:" + key)


BACKGROUND_RECHECK_S = 0.05  # a background caller behind a scheduled waiter looks again this often
BACKGROUND_PACE_PARTS = 12  # background calls take an hourly quota a twelfth per twelfth of the hour


def background_pace(rates: tuple[RateSpec, ...]) -> tuple[RateSpec, ...]:
    """The pace background calls keep on top of `rates`: each quota window's limit spread over
    BACKGROUND_PACE_PARTS parts of it. A backfill then cannot spend an hour's quota in one burst,
    which would leave the credential's scheduled syncs no call until that hour slid by; paced, it
    still uses the whole quota, and a freed slot is never more than a part of the hour away."""
    return tuple(
        RateSpec(math.ceil(r.limit / BACKGROUND_PACE_PARTS), r.per_seconds / BACKGROUND_PACE_PARTS, exact=True)
        for r in rates
        if r.per_seconds > PER_SECOND_WINDOW_S and r.limit >= BACKGROUND_PACE_PARTS
    )


def pace_key(key: str) -> str:
    return key + "|background-pace"


WAIT_FOR_LOCK = "SELECT pg_advisory_lock(%s)"
TRY_LOCK = "SELECT pg_try_advisory_lock(%s)"
UNLOCK = "SELECT pg_advisory_unlock(%s)"
SET_WAITING_ROOM_TIMEOUT = "SELECT set_config('lock_timeout', %s, false)"

LOCK_TIMEOUT = "SET LOCAL lock_timeout = '5s'"
LOCK_BUCKET_TABLE = "LOCK TABLE {table} IN EXCLUSIVE MODE"
DATABASE_NOW_MS = "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
# the call that must leave a rate's window before one more fits: the limit-th newest
NTH_NEWEST_CALL_MS = """
SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
       (SELECT (extract(epoch FROM item_timestamp::timestamptz) * 1000)::bigint
        FROM {table} ORDER BY item_timestamp DESC OFFSET %s LIMIT 1)
"""
LOCK_CONTENTION_RETRY_MS = 20
# As NTH_NEWEST_CALL_MS, a call in flight (logged ahead, see IN_FLIGHT_HOLD_MS) counted as if
# answered now: it will be, in about a round trip, and wait_s() must not report the hold.
NTH_NEWEST_SETTLED_CALL_MS = """
WITH now AS (SELECT clock_timestamp() AS t)
SELECT (extract(epoch FROM now.t) * 1000)::bigint,
       (SELECT (extract(epoch FROM LEAST(item_timestamp, now.t::timestamp)::timestamptz) * 1000)::bigint
        FROM {table} ORDER BY 1 DESC OFFSET %s LIMIT 1)
FROM now
"""
# A call's answer is back: its stamp moves to the answer's time if that is sooner than its
# provisional stamp (the provider counted the call before answering it, so the log never shows it
# too early). The answer's time is the database clock when the statement arrived (before any
# wait for the bucket's lock) less the seconds between the answer and sending the statement.
SETTLE_CALL = """
UPDATE {table}
SET item_timestamp = LEAST(item_timestamp, (statement_timestamp() - make_interval(secs => %s))::timestamp)
WHERE name = %s
"""
CALLS_IN_WINDOW = """
SELECT count(*) FROM {table} WHERE item_timestamp > clock_timestamp() - (%s * INTERVAL '1 millisecond')
"""


# The limiter's stamps need to be seen by every worker at once, not to outlive a crash of the
# server: an admission committed without waiting for the WAL flush is visible to the others just the
# same, and costs about 1 ms instead of a disk flush (10-20 ms here), which every call would pay on
# the way out. A server crash could forget the last few hundred ms of stamps; the provider's
# throttle answers (Retry-After) cover that.
ASYNCHRONOUS_COMMIT = "SET synchronous_commit = off"


def _asynchronous_commit(conn: psycopg.Connection) -> None:
    conn.execute(ASYNCHRONOUS_COMMIT)
    conn.commit()


class LockedClockPostgresBucket(PostgresBucket):
    """pyrate's PostgreSQL bucket, stamping each call with the database clock under the table lock.

    Check and insert happen in one transaction that holds the bucket table's EXCLUSIVE lock, and
    the stamp is the database's clock_timestamp() read after the lock was granted: every worker
    on every machine stamps on one clock, in the order the lock serialised them, so no call is
    ever logged earlier than it was admitted. The lock waits (up to 5 s) instead of pyrate's
    NOWAIT: it is held for two short statements, and waiting is cheaper than a retry loop.

    With `in_flight_ms` (settled rates), a call is logged `in_flight_ms` ahead of its admission
    under a name of its own, so it holds its slot while in flight, and :meth:`settle` moves it to
    the time its answer came back. The provider counts a call when it arrives, which is before its
    answer is back: the log never shows a call earlier than the provider saw it, whatever the
    delay between admission and arrival, so the window needs no margin. A caller refused because
    of a call in flight looks again every IN_FLIGHT_POLL_MS instead of sleeping out the hold.
    """

    def __init__(self, pool: ConnectionPool, table: str, rates: list[Rate], *, in_flight_ms: int = 0) -> None:
        super().__init__(pool, table, rates)
        self.in_flight_ms = in_flight_ms
        self._pending = threading.local()  # this thread's admitted, unsettled call (its row name)
        self._q_settle = sql.SQL(SETTLE_CALL).format(table=sql.Identifier(self._full_tbl))
        self._q_lock_wait = sql.SQL(LOCK_BUCKET_TABLE).format(table=sql.Identifier(self._full_tbl))
        nth_newest = NTH_NEWEST_SETTLED_CALL_MS if in_flight_ms else NTH_NEWEST_CALL_MS
        self._q_nth_newest = sql.SQL(nth_newest).format(table=sql.Identifier(self._full_tbl))
        self._q_in_window = sql.SQL(CALLS_IN_WINDOW).format(table=sql.Identifier(self._full_tbl))

    def usage(self) -> list[tuple[Rate, int]]:
        """Each rate with the calls its window holds now (for the long-wait log line)."""
        with self._get_conn() as conn:
            return [(rate, int(conn.execute(self._q_in_window, (rate.interval,)).fetchone()[0])) for rate in self.rates]

    def wait_ms(self, calls: int = 1) -> int:
        """Milliseconds until `calls` more calls fit every rate (0: now), without taking a slot."""
        wait = 0
        with self._get_conn() as conn:
            for rate in self.rates:
                now_ms, nth_ms = conn.execute(self._q_nth_newest, (max(0, rate.limit - calls),)).fetchone()
                if nth_ms is not None:
                    wait = max(wait, nth_ms + rate.interval - now_ms)
        return wait

    def put(self, item: RateItem) -> bool:
        if item.weight == 0:
            return self._record(item, ADMITTED)
        with self._get_conn() as conn:
            conn.execute(LOCK_TIMEOUT)
            try:
                conn.execute(self._q_lock_wait)
            except LockNotAvailable:
                conn.rollback()
                return self._record(item, Decision(failing_rate=self.rates[0], retry_after_ms=LOCK_CONTENTION_RETRY_MS))
            row = conn.execute(DATABASE_NOW_MS).fetchone()
            assert row is not None
            item.timestamp = int(row[0])  # the limiter's later waits count from this stamp too
            windows = [self._algorithm.window_start(rate, item.timestamp) / 1000 for rate in self.rates]
            counts = conn.execute(self._q_count_windows, windows).fetchone()

            def peek_timestamp(offset: int) -> int | None:
                peeked = conn.execute(self._q_peek, (offset,)).fetchone()
                return None if peeked is None else int(peeked[2])

            decision = self._algorithm.decide(self.rates, counts, item.weight, item.timestamp, peek_timestamp)
            rate = decision.failing_rate
            if rate is not None and self.in_flight_ms and (decision.retry_after_ms or 0) > rate.interval + 1:
                # refused because of a call still in flight (logged ahead): look again shortly,
                # it is settled in about a round trip
                decision = Decision(failing_rate=rate, retry_after_ms=IN_FLIGHT_POLL_MS)
            ahead_ms = 0
            if rate is not None and self.in_flight_ms and (decision.retry_after_ms or 0) > ADMIT_AHEAD_MS:
                # a settled rate runs at the round trip: look again just before the slot comes
                decision = Decision(failing_rate=rate, retry_after_ms=decision.retry_after_ms - ADMIT_AHEAD_MS)
            elif rate is not None and self.in_flight_ms and decision.retry_after_ms:
                # the slot is a moment away: take it now, and the caller sends when it comes
                # (wait_for_slot_time), so this look's round trip is not on the call's way out
                ahead_ms, decision = decision.retry_after_ms, ADMITTED
            if not self._record(item, decision):
                return False
            name = f"{item.name}:{uuid.uuid4().hex}" if self.in_flight_ms else item.name
            stamp_ms = item.timestamp + self.in_flight_ms
            conn.execute(self._q_put, (name, item.weight, stamp_ms / 1000, item.weight))
        self._pending.name = name if self.in_flight_ms else None
        self._pending.admitted_ms = item.timestamp
        # measured after the database read its clock: never sooner than the slot on that clock
        self._pending.send_at = time.monotonic() + ahead_ms / 1000 if ahead_ms else 0.0
        return True

    def wait_for_slot_time(self) -> float:
        """Sleep until this thread's last admitted call may go out (it may be admitted a few ms
        ahead of its slot); return the seconds slept."""
        send_at = getattr(self._pending, "send_at", 0.0)
        self._pending.send_at = 0.0
        delay = send_at - time.monotonic()
        if delay <= 0:
            return 0.0
        time.sleep(delay)
        return delay

    def settle(self, answered_at: float | None = None) -> None:
        """This thread's last admitted call has its answer (at `answered_at`, time.monotonic(); None:
        now): log it at that moment if sooner than its provisional stamp."""
        name = getattr(self._pending, "name", None)
        if name is None:
            return
        self._pending.name = None
        try:
            with self._get_conn() as conn:
                # measured just before sending: the statement's arrival is a moment later still
                since = 0.0 if answered_at is None else max(0.0, time.monotonic() - answered_at)
                conn.execute(self._q_settle, (since, name))
        except psycopg.Error:  # the provisional stamp stays: later than needed, never too early
            log.warning("could not settle a call's stamp in %s", self.table, exc_info=True)


# A lane holder says when it expects to be done in its connection's application_name (which
# dies with the connection, as the lane does): "<holder> done_at=<unix time>".
LANE_DONE_AT = " done_at="
SET_APPLICATION_NAME = "SELECT set_config('application_name', %s, false)"
# An advisory lock on a bigint key shows in pg_locks as (classid, objid) = (high, low) 32 bits, objsubid 1.
LANE_HOLDER_NAME = """
SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = %s AND l.objid::bigint = %s AND l.objsubid = 1
"""


def pg_locks_key(lock: int) -> tuple[int, int]:
    """An advisory lock's bigint id as pg_locks shows it: (classid, objid), its high and low 32 bits."""
    unsigned = lock & 0xFFFFFFFFFFFFFFFF
    return unsigned >> 32, unsigned & 0xFFFFFFFF


def lane_done_at(application_name: str | None) -> float | None:
    """The unix time a lane holder expects to be done, from its application_name (None: not said)."""
    if not application_name or LANE_DONE_AT not in application_name:
        return None
    try:
        return float(application_name.rsplit(LANE_DONE_AT, 1)[1])
    except ValueError:
        return None


class LaneHold:
    """A try at a key's lane: true when taken. The holder may say when it expects to be done, so
    that a task turned away can come back then instead of looking every few minutes."""

    def __init__(self, conn: psycopg.Connection | None) -> None:
        self._conn = conn

    def __bool__(self) -> bool:
        return self._conn is not None

    def expect_done_in(self, seconds: float) -> None:
        if self._conn is None or self._conn.closed:
            return
        # to 0.1 s (application_name holds 63 characters), rounded down: an estimate never
        # sends a waiting task away for longer than the holder said
        done_at = math.floor((time.time() + max(0.0, seconds)) * 10) / 10
        name = f"{holder_name()[:40]}{LANE_DONE_AT}{done_at:.1f}"
        self._conn.execute(SET_APPLICATION_NAME, (name,))


class SharedRateLimiter:
    """Blocks each caller until its key's rates admit one more call."""

    _pools: dict[str, ConnectionPool] = {}
    _pools_lock = threading.Lock()
    _instances: weakref.WeakSet[SharedRateLimiter] = weakref.WeakSet()

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._limiters: dict[tuple[str, tuple[RateSpec, ...]], Limiter] = {}
        self._buckets: dict[tuple[str, tuple[RateSpec, ...]], LockedClockPostgresBucket] = {}
        self._lock = threading.Lock()
        self._instances.add(self)

    def close(self) -> None:
        """Stop the buckets' background leak threads."""
        with self._lock:
            for limiter in self._limiters.values():
                limiter.close()
            self._limiters.clear()
            self._buckets.clear()

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
                pool = ConnectionPool(dsn, min_size=1, max_size=4, open=True, name="paceline-limiter",
                                      configure=_asynchronous_commit)
                cls._pools[dsn] = pool
            return pool

    def _limiter(self, key: str, rates: tuple[RateSpec, ...]) -> Limiter:
        with self._lock:
            limiter = self._limiters.get((key, rates))
            if limiter is None:
                ordered = sorted((r.to_rate() for r in rates), key=lambda r: r.interval)
                in_flight_ms = IN_FLIGHT_HOLD_MS if any(r.settled for r in rates) else 0
                bucket = LockedClockPostgresBucket(
                    self._pool(self.dsn), bucket_table(key), ordered, in_flight_ms=in_flight_ms
                )
                limiter = Limiter(bucket, buffer_ms=SETTLED_WAIT_BUFFER_MS if in_flight_ms else DEFAULT_WAIT_BUFFER_MS)
                self._limiters[(key, rates)] = limiter
                self._buckets[(key, rates)] = bucket
            return limiter

    def settle(self, key: str, rates: tuple[RateSpec, ...], answered_at: float | None = None) -> None:
        """The answer to this thread's last call on `key` came back at `answered_at`
        (time.monotonic(); None: now); see LockedClockPostgresBucket. A no-op unless `rates` are
        settled ones."""
        bucket = self._buckets.get((key, rates))
        if bucket is not None and bucket.in_flight_ms:
            bucket.settle(answered_at)

    def wait_s(self, key: str, rates: tuple[RateSpec, ...], calls: int = 1) -> float:
        """Seconds until `key` may make `calls` more calls (0.0: now); takes no slot."""
        if not rates:
            return 0.0
        self._limiter(key, rates)
        return self._buckets[(key, rates)].wait_ms(min(calls, min(r.limit for r in rates))) / 1000.0

    def _is_locked(self, lock: int) -> bool:
        with self._pool(self.dsn).connection() as conn:
            row = conn.execute(TRY_LOCK, (lock,)).fetchone()
            taken = bool(row and row[0])
            if taken:
                conn.execute(UNLOCK, (lock,))
        return not taken

    def background_wait_s(self, key: str, rates: tuple[RateSpec, ...], calls: int = 1) -> float:
        """Seconds until background work may make `calls` more calls on `key`: the quota and the pace."""
        pace = background_pace(rates)
        return max(self.wait_s(key, rates, calls), self.wait_s(pace_key(key), pace, calls) if pace else 0.0)

    def has_waiter(self, key: str, *, background: bool = False) -> bool:
        """Whether a scheduled (or, with `background`, a background) caller in any process is
        waiting for `key`'s next call right now."""
        return self._is_locked(waiting_room_id(key, background=background))

    def has_background_work(self, key: str) -> bool:
        """Whether background work on `key` is running: a lane holder, or a background caller waiting."""
        return self._is_locked(lane_id(key)) or self.has_waiter(key, background=True)

    @contextmanager
    def lane(self, key: str) -> Iterator[LaneHold]:
        """Try to take `key`'s lane for the length of the block; yields a LaneHold, true when taken.

        The lane is an advisory lock on a connection of its own, so a worker that dies frees it."""
        lock = lane_id(key)
        with psycopg.connect(self.dsn, autocommit=True, application_name=holder_name()) as conn:
            row = conn.execute(TRY_LOCK, (lock,)).fetchone()
            hold = LaneHold(conn if row and row[0] else None)
            try:
                yield hold
            finally:
                if hold and not conn.closed:
                    conn.execute(UNLOCK, (lock,))

    def lane_free_in_s(self, key: str) -> float | None:
        """Seconds until the holder of `key`'s lane expects to be done (LaneHold.expect_done_in);
        None when nobody holds it or the holder said nothing."""
        with self._pool(self.dsn).connection() as conn:
            row = conn.execute(LANE_HOLDER_NAME, pg_locks_key(lane_id(key))).fetchone()
        done_at = lane_done_at(row[0] if row else None)
        return None if done_at is None else max(0.0, done_at - time.time())

    @contextmanager
    def waiting_room(self, key: str, max_wait_s: float | None = None, *, background: bool = False) -> Iterator[None]:
        """Hold `key`'s waiting room (queueing behind its current waiter) on a connection of its own."""
        room = waiting_room_id(key, background=background)
        with psycopg.connect(self.dsn, autocommit=True, application_name=holder_name()) as conn:
            if max_wait_s is not None:
                conn.execute(SET_WAITING_ROOM_TIMEOUT, (f"{max(1, int(max_wait_s * 1000))}ms",))
            try:
                conn.execute(WAIT_FOR_LOCK, (room,))
            except (LockNotAvailable, QueryCanceled) as exc:
                raise RateLimitTimeout(f"rate limit for {bucket_table(key)} still spent after {max_wait_s:.0f}s") from exc
            try:
                yield
            finally:
                conn.execute(UNLOCK, (room,))

    def acquire(
        self, key: str, rates: tuple[RateSpec, ...], max_wait_s: float | None = None, *, background: bool = False
    ) -> float:
        """Wait until one call on `key` is allowed and record it; return the seconds waited.

        A call that fits takes its slot at once; one that must wait longer than a moment waits in
        the key's waiting room, so that other tasks can see the key is spoken for. A `background`
        call waits in the background room and takes no slot while a scheduled call waits."""
        if not rates:
            return 0.0
        waited = self._acquire(key, rates, max_wait_s, background=background)
        return waited + self._buckets[(key, rates)].wait_for_slot_time()

    def _acquire(
        self, key: str, rates: tuple[RateSpec, ...], max_wait_s: float | None, *, background: bool
    ) -> float:
        paced = 0.0
        if background and (pace := background_pace(rates)):
            paced = self.acquire(pace_key(key), pace, max_wait_s)
        limiter = self._limiter(key, rates)
        if not (background and self.has_waiter(key)) and limiter.try_acquire(bucket_table(key), blocking=False):
            return paced
        started = time.monotonic() - paced
        wait = self.wait_s(key, rates)
        if wait > long_wait_log_s():
            self._log_long_wait(key, rates, wait, background=background)
        if background:
            with self.waiting_room(key, max_wait_s, background=True):
                return self._wait_behind_scheduled(limiter, key, rates, max_wait_s, started)
        if wait <= short_window_s(rates):  # a per-second cap: queue on the bucket directly
            return self._wait_for_slot(limiter, key, max_wait_s, started)
        with self.waiting_room(key, max_wait_s):
            return self._wait_for_slot(limiter, key, max_wait_s, started)

    def _log_long_wait(self, key: str, rates: tuple[RateSpec, ...], wait: float, *, background: bool) -> None:
        # once per wait, before it starts: an operator sees why a task sits still, and until when
        used = ", ".join(
            f"{count}/{rate.limit} in {rate.interval / 1000:g}s" for rate, count in self._buckets[(key, rates)].usage()
        )
        frees = (datetime.now(UTC) + timedelta(seconds=wait)).strftime("%H:%M:%S UTC")
        log.info(
            "rate limit %s: %s call waits %.1fs; calls used in the window: %s; next slot frees at %s",
            bucket_table(key),  # hashed: keys contain credentials
            "background" if background else "scheduled",
            wait,
            used,
            frees,
        )

    def _wait_behind_scheduled(
        self, limiter: Limiter, key: str, rates: tuple[RateSpec, ...], max_wait_s: float | None, started: float
    ) -> float:
        # No blocking acquire here: it would race a scheduled waiter for each freed slot.
        while True:
            remaining = None if max_wait_s is None else max_wait_s - (time.monotonic() - started)
            if remaining is not None and remaining <= 0:
                raise RateLimitTimeout(f"rate limit for {bucket_table(key)} still spent after {max_wait_s:.0f}s")
            wait = self.wait_s(key, rates)
            if wait <= 0 and not self.has_waiter(key) and limiter.try_acquire(bucket_table(key), blocking=False):
                return time.monotonic() - started
            time.sleep(min(max(wait, BACKGROUND_RECHECK_S), 300.0, remaining if remaining is not None else 300.0))

    @staticmethod
    def _wait_for_slot(limiter: Limiter, key: str, max_wait_s: float | None, started: float) -> float:
        # pyrate's own wait loop is bounded by its timeout; loop so that waits of an hour work too.
        while True:
            remaining = None if max_wait_s is None else max_wait_s - (time.monotonic() - started)
            if remaining is not None and remaining <= 0:
                raise RateLimitTimeout(f"rate limit for {bucket_table(key)} still spent after {max_wait_s:.0f}s")
            timeout = 300.0 if remaining is None else min(300.0, remaining)
            if limiter.try_acquire(bucket_table(key), blocking=True, timeout=timeout):
                return time.monotonic() - started
