"""The shared limiter: several OS processes on one key never exceed its rates and use them fully."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest

from paceline.http.limiter import SHORT_WINDOW_MARGIN, RateSpec, SharedRateLimiter, bucket_table

RATES = (RateSpec(5, 1.0), RateSpec(30, 10.0))
DURATION_S = 12.0


def _hammer(dsn: str, key: str, until: float, out: mp.Queue) -> None:
    limiter = SharedRateLimiter(dsn)
    stamps: list[float] = []
    while time.time() < until:
        try:
            limiter.acquire(key, RATES, max_wait_s=max(0.05, until - time.time()))
        except Exception:
            break
        stamps.append(time.time())
    out.put([s for s in stamps if s <= until])


def _max_in_window(stamps: list[float], window: float) -> int:
    best, start = 0, 0
    for end, stamp in enumerate(stamps):
        while stamps[start] <= stamp - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_two_processes_never_exceed_the_rates_and_use_them(warehouse_dsn: str) -> None:
    key = f"test:limiter:{time.time()}"
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    until = time.time() + DURATION_S + 3  # processes need a moment to start
    procs = [ctx.Process(target=_hammer, args=(warehouse_dsn, key, until, out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    stamps = sorted(s for r in results for s in r)
    assert stamps, "no call was admitted"
    # Never over either rate, measured on the callers' clocks with no margin for them.
    assert _max_in_window(stamps, 1.0) <= 5
    assert _max_in_window(stamps, 10.0) <= 30
    # Together they use the quota: over the busy span, the hourly-style rate (30/10 s) is the
    # binding one; the ideal count is one full window at once plus the per-second pace after it.
    span = stamps[-1] - stamps[0]
    ideal = 30 + max(0.0, span - 10.0) * 5 / (1 + SHORT_WINDOW_MARGIN)
    assert len(stamps) >= 0.9 * ideal, f"{len(stamps)} calls in {span:.1f}s, ideal {ideal:.0f}"


def test_a_burst_takes_the_long_window_quota_at_once(warehouse_dsn: str) -> None:
    limiter = SharedRateLimiter(warehouse_dsn)
    key = f"test:burst:{time.time()}"
    rates = (RateSpec(20, 3600.0),)
    started = time.monotonic()
    for _ in range(20):
        limiter.acquire(key, rates)
    assert time.monotonic() - started < 5, "an hourly quota must not be spread out"


def test_the_quota_spent_makes_callers_wait_not_fail(warehouse_dsn: str) -> None:
    limiter = SharedRateLimiter(warehouse_dsn)
    key = f"test:wait:{time.time()}"
    rates = (RateSpec(3, 2.0),)
    for _ in range(3):
        limiter.acquire(key, rates)
    started = time.monotonic()
    limiter.acquire(key, rates)
    assert time.monotonic() - started >= 1.5


def test_keys_do_not_share_quota_and_table_names_hide_credentials(warehouse_dsn: str) -> None:
    limiter = SharedRateLimiter(warehouse_dsn)
    rates = (RateSpec(2, 3600.0),)
    secret_key = f"runsignup:SECRET-API-KEY-{time.time()}"
    other_key = f"runsignup:other-{time.time()}"
    for _ in range(2):
        limiter.acquire(secret_key, rates)
    started = time.monotonic()
    limiter.acquire(other_key, rates)
    assert time.monotonic() - started < 2
    assert "SECRET" not in bucket_table(secret_key)


@pytest.mark.parametrize("limit", [0.5, 2])
def test_per_second_accepts_fractions(limit: float) -> None:
    from paceline.http.limiter import per_second

    spec = per_second(limit)
    assert spec.limit / spec.per_seconds == pytest.approx(limit)
