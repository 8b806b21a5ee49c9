"""Quota accounting shared by the registration benchmarks: when each credential's calls were made,
and how much of its quota they used while it had work waiting.

The share is measured over sliding one-"hour" windows, the way the provider counts: for every
window (t - hour, t] whose end t lies in a span, the calls in it over the quota. Two spans:

- from the start of the run to the credential's last call: everything, including time its work
  waited for the plan or for a pool slot, and the last hour, in which its remaining work may be
  smaller than the quota;
- while the quota held it back: from the first to the last moment one of its calls waited for
  the limiter or one of its tasks was rescheduled because its quota was spent. A window that ends
  at such a moment is full by definition; one between two of them shows quota left unused while
  the credential was quota-bound (its tasks waiting for slots, or idle between reschedules).

A credential never held back by its quota (its work fitted in a burst) has no figure.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


def merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlapping intervals merged, in order."""
    out: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def window_share(times: list[float], hour: float, quota: int, spans: list[tuple[float, float]]) -> float | None:
    """Mean share of `quota` used over the one-hour windows (t - hour, t] lying inside a span
    (`times` sorted); None when no span holds a whole window."""
    used = []
    step = hour / 20
    for start, end in spans:
        t = start + hour
        while t <= end + 1e-9:
            lo = bisect.bisect_right(times, t - hour)
            hi = bisect.bisect_right(times, t)
            used.append(min(hi - lo, quota) / quota)
            t += step
    return sum(used) / len(used) if used else None


def share_of_windows_ending_in(times: list[float], hour: float, quota: int, span: list[tuple[float, float]]) -> float | None:
    """Mean share of `quota` used over the one-hour windows (t - hour, t] whose end t lies in the
    span (`times` sorted); None without a span."""
    if not span:
        return None
    start, end = span[0]
    samples = max(20, int((end - start) / (hour / 20)))
    used = []
    for n in range(samples + 1):
        t = start + (end - start) * n / samples
        used.append(min(bisect.bisect_right(times, t) - bisect.bisect_right(times, t - hour), quota) / quota)
    return sum(used) / len(used)


def fmt(share: float | None) -> str:
    return "   -" if share is None else f"{share:4.0%}"


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


class CallLog:
    """Per limiter key: when each call was admitted, and when the quota held the key back (a call
    waited in the limiter's waiting room, or a task was rescheduled because the quota was spent)."""

    def __init__(self) -> None:
        self.stamps: dict[str, list[float]] = defaultdict(list)
        self.skipped_stamps: dict[str, list[float]] = defaultdict(list)  # the probes' calls, apart
        self.holds: dict[str, list[float]] = defaultdict(list)
        self._lock = threading.Lock()

    def call(self, key: str, at: float) -> None:
        with self._lock:
            self.stamps[key].append(at)

    def skipped_call(self, key: str, at: float) -> None:
        with self._lock:
            self.skipped_stamps[key].append(at)

    def hold(self, key: str, at: float) -> None:
        with self._lock:
            self.holds[key].append(at)

    def held_back_span(self, key: str, since: float = 0.0) -> list[tuple[float, float]]:
        """From the first to the last time (after `since`) the quota held `key` back: while it had
        work and the quota, not a pool slot or the plan, was what it waited for."""
        holds = [t for t in self.holds.get(key, []) if t >= since]
        return [(min(holds), max(holds))] if holds else []


@contextmanager
def recorded_calls(skip_thread_prefix: str | None = None) -> Iterator[CallLog]:
    """Record every call through the shared limiter, and every quota reschedule, per limiter key;
    calls from threads named `skip_thread_prefix`... are kept apart (a benchmark's probes)."""
    from paceline.http.limiter import QuotaSpent, SharedRateLimiter
    from paceline.http.session import ApiSession

    log = CallLog()
    take_slot = ApiSession._take_slot
    reschedule_check = ApiSession.reschedule_if_quota_spent
    waiting_room = SharedRateLimiter.waiting_room

    def skipped() -> bool:
        return skip_thread_prefix is not None and threading.current_thread().name.startswith(skip_thread_prefix)

    def recording(self: ApiSession) -> None:
        take_slot(self)
        if self.limiter is not None:
            (log.skipped_call if skipped() else log.call)(self.limiter_key, time.monotonic())

    def checking(self: ApiSession, *args: object, **kwargs: object) -> None:
        try:
            reschedule_check(self, *args, **kwargs)
        except QuotaSpent:
            if not skipped():
                log.hold(self.limiter_key, time.monotonic())
            raise

    @contextmanager
    def waiting(self: SharedRateLimiter, key: str, *args: object, **kwargs: object) -> Iterator[None]:
        if not skipped():
            log.hold(key, time.monotonic())
        with waiting_room(self, key, *args, **kwargs):
            yield
        if not skipped():
            log.hold(key, time.monotonic())

    ApiSession._take_slot = recording  # type: ignore[method-assign]
    ApiSession.reschedule_if_quota_spent = checking  # type: ignore[method-assign]
    SharedRateLimiter.waiting_room = waiting  # type: ignore[method-assign]
    try:
        yield log
    finally:
        ApiSession._take_slot = take_slot  # type: ignore[method-assign]
        ApiSession.reschedule_if_quota_spent = reschedule_check  # type: ignore[method-assign]
        SharedRateLimiter.waiting_room = waiting_room  # type: ignore[method-assign]
