"""The shared limiter: several OS processes on one key never exceed its rates and use them fully."""

from __future__ import annotations

import multiprocessing as mp
import threading
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


def test_wait_s_says_when_the_next_call_fits_and_takes_no_slot(warehouse_dsn: str) -> None:
    limiter = SharedRateLimiter(warehouse_dsn)
    key = f"test:peek:{time.time()}"
    rates = (RateSpec(3, 4.0),)
    assert limiter.wait_s(key, rates) == 0.0
    for _ in range(3):
        limiter.acquire(key, rates)
    first = limiter.wait_s(key, rates)
    assert 3.0 < first <= 4.0 * (1 + SHORT_WINDOW_MARGIN)
    assert limiter.wait_s(key, rates) <= first  # peeking twice spent nothing
    started = time.monotonic()
    limiter.acquire(key, rates)
    assert time.monotonic() - started == pytest.approx(first, abs=0.5)


def test_wait_s_for_several_calls_waits_for_the_oldest_ones_to_leave(warehouse_dsn: str) -> None:
    limiter = SharedRateLimiter(warehouse_dsn)
    key = f"test:peek-many:{time.time()}"
    rates = (RateSpec(3, 3.0),)
    limiter.acquire(key, rates)
    time.sleep(1.0)
    limiter.acquire(key, rates)
    assert limiter.wait_s(key, rates, calls=1) == 0.0  # one of three left
    two = limiter.wait_s(key, rates, calls=2)  # the first call must leave its window
    assert 1.9 < two <= 3.0 * (1 + SHORT_WINDOW_MARGIN) - 1.0
    three = limiter.wait_s(key, rates, calls=3)  # both must leave
    assert 2.9 < three <= 3.0 * (1 + SHORT_WINDOW_MARGIN)
    # never more than the quota itself (read a moment later, so a millisecond or so less)
    assert limiter.wait_s(key, rates, calls=10) == pytest.approx(three, abs=0.05)


def test_a_call_is_stamped_when_it_is_admitted_not_when_it_asked(warehouse_dsn: str) -> None:
    """Stock pyrate stamped a call before taking the bucket's table lock, so a call that waited
    for the lock was logged earlier than it went out, and the provider saw one call too many."""

    import psycopg
    from psycopg import sql

    limiter = SharedRateLimiter(warehouse_dsn)
    key = f"test:stamp:{time.time()}"
    rates = (RateSpec(100, 60.0),)
    limiter.acquire(key, rates)  # creates the bucket table
    table = sql.Identifier(f"ratelimit___{bucket_table(key)}")
    released: list[float] = []
    locked = threading.Event()

    def hold_the_lock() -> None:
        with psycopg.connect(warehouse_dsn) as conn:
            conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(table))
            locked.set()
            time.sleep(1.5)
            released.append(conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0])

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    locked.wait(10)
    limiter.acquire(key, rates)
    holder.join()
    with psycopg.connect(warehouse_dsn) as conn:
        stamp = conn.execute(
            sql.SQL("SELECT extract(epoch FROM max(item_timestamp)::timestamptz) FROM {}").format(table)
        ).fetchone()[0]
    assert stamp >= released[0], f"stamped {float(released[0] - stamp):.3f}s before it was admitted"


def test_a_spent_quota_reschedules_a_task_that_has_not_started(warehouse_dsn: str, monkeypatch) -> None:
    from airflow.sdk.exceptions import AirflowRescheduleException

    from paceline.http.limiter import QuotaSpent
    from paceline.http.session import ApiSession

    monkeypatch.setenv("PACELINE_RATE_HOUR_SECONDS", "60")  # reschedule beyond 1 s instead of 60 s
    limiter = SharedRateLimiter(warehouse_dsn)
    key = f"test:reschedule:{time.time()}"
    session = ApiSession("http://127.0.0.1:9", limiter=limiter, limiter_key=key, rates=(RateSpec(2, 30.0),))
    session.reschedule_if_quota_spent()  # quota left: nothing happens
    for _ in range(2):
        limiter.acquire(key, session.rates)
    with pytest.raises(QuotaSpent) as spent:
        session.reschedule_if_quota_spent()
    assert isinstance(spent.value, AirflowRescheduleException)  # what Airflow turns into up_for_reschedule
    assert 25 < spent.value.wait_s <= 30
    session.close()


def test_one_waiter_per_key_and_later_tasks_reschedule_behind_it(warehouse_dsn: str, monkeypatch) -> None:
    """A call that must wait for the quota holds its key's waiting room; a task that has not
    started sees it and reschedules rather than holding a second slot; the room empties on admission."""
    from paceline.http.limiter import QuotaSpent
    from paceline.http.session import ApiSession

    monkeypatch.setenv("PACELINE_RATE_HOUR_SECONDS", "360")  # reschedule beyond 6 s
    limiter = SharedRateLimiter(warehouse_dsn)
    key = f"test:waiting-room:{time.time()}"
    rates = (RateSpec(2, 3.0),)
    for _ in range(2):
        assert limiter.acquire(key, rates) == 0.0  # fits: no waiting room
    assert not limiter.has_waiter(key)
    waited: list[float] = []
    waiter = threading.Thread(target=lambda: waited.append(limiter.acquire(key, rates)))
    waiter.start()
    deadline = time.monotonic() + 2
    while not limiter.has_waiter(key) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert limiter.has_waiter(key), "a caller waiting for the quota is not visible to other tasks"
    newcomer = ApiSession("http://127.0.0.1:9", limiter=limiter, limiter_key=key, rates=rates)
    with pytest.raises(QuotaSpent) as spent:
        newcomer.reschedule_if_quota_spent()  # the next call is < 6 s away, but someone waits for it
    assert spent.value.in_use and spent.value.wait_s == pytest.approx(6.0)
    waiter.join(10)
    assert waited and 1.5 < waited[0] < 3.5
    assert not limiter.has_waiter(key)
    newcomer.close()


def test_a_short_per_second_wait_does_not_take_the_waiting_room(warehouse_dsn: str) -> None:
    from paceline.http.limiter import short_window_s

    limiter = SharedRateLimiter(warehouse_dsn)
    key = f"test:per-second:{time.time()}"
    rates = (RateSpec(1, 1.0), RateSpec(100, 600.0))
    assert 1.0 < short_window_s(rates) < 1.1
    limiter.acquire(key, rates)
    seen: list[bool] = []
    waiter = threading.Thread(target=lambda: limiter.acquire(key, rates))
    waiter.start()
    while waiter.is_alive():
        seen.append(limiter.has_waiter(key))
        time.sleep(0.05)
    assert seen and not any(seen)


def test_a_task_starts_only_when_its_first_calls_fit_now(warehouse_dsn: str, monkeypatch) -> None:
    from paceline.http.limiter import QuotaSpent
    from paceline.http.session import ApiSession

    monkeypatch.setenv("PACELINE_RATE_HOUR_SECONDS", "360")  # reschedule beyond 6 s
    limiter = SharedRateLimiter(warehouse_dsn)
    key = f"test:first-calls:{time.time()}"
    session = ApiSession("http://127.0.0.1:9", limiter=limiter, limiter_key=key, rates=(RateSpec(2, 3.0),))
    session.reschedule_if_quota_spent(calls=2)  # both fit: start
    limiter.acquire(key, session.rates)
    session.reschedule_if_quota_spent(calls=1)  # one still fits
    with pytest.raises(QuotaSpent) as spent:
        session.reschedule_if_quota_spent(calls=2)  # the second is ~3 s away: not worth holding a slot
    assert spent.value.in_use and spent.value.wait_s == pytest.approx(6.0)
    session.close()


def _wait_until(check, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check() and time.monotonic() < deadline:
        time.sleep(0.02)
    return check()


def test_a_scheduled_call_goes_before_a_waiting_background_call(warehouse_dsn: str) -> None:
    """A backfill spending a credential's quota must not starve its scheduled syncs: a background
    caller that was waiting first still lets a scheduled caller take the freed slots."""
    limiter = SharedRateLimiter(warehouse_dsn)
    key = f"test:background:{time.time()}"
    rates = (RateSpec(2, 2.5),)
    for _ in range(2):
        limiter.acquire(key, rates)
    admitted: list[str] = []
    lock = threading.Lock()

    def call(who: str, background: bool) -> None:
        limiter.acquire(key, rates, background=background)
        with lock:
            admitted.append(who)

    backfill = threading.Thread(target=call, args=("backfill", True))
    backfill.start()
    assert _wait_until(lambda: limiter.has_waiter(key, background=True)), "the background caller is not waiting"
    assert not limiter.has_waiter(key)  # a background waiter does not hold the scheduled room
    scheduled = [threading.Thread(target=call, args=(f"scheduled-{n}", False)) for n in range(2)]
    for thread in scheduled:
        thread.start()
    for thread in [backfill, *scheduled]:
        thread.join(15)
    assert sorted(admitted[:2]) == ["scheduled-0", "scheduled-1"] and admitted[2] == "backfill"


def test_a_scheduled_task_starts_while_background_work_spends_the_quota(warehouse_dsn: str, monkeypatch) -> None:
    from paceline.http.limiter import QuotaSpent
    from paceline.http.session import ApiSession

    monkeypatch.setenv("PACELINE_RATE_HOUR_SECONDS", "360")  # reschedule beyond 6 s
    limiter = SharedRateLimiter(warehouse_dsn)
    key = f"test:background-start:{time.time()}"
    rates = (RateSpec(2, 2.5),)
    scheduled = ApiSession("http://127.0.0.1:9", limiter=limiter, limiter_key=key, rates=rates)
    backfill = ApiSession("http://127.0.0.1:9", limiter=limiter, limiter_key=key, rates=rates, background=True)
    for _ in range(2):
        limiter.acquire(key, rates, background=True)
    with pytest.raises(QuotaSpent):
        scheduled.reschedule_if_quota_spent()  # spent by nobody who is still at work: wait for it elsewhere
    waiter = threading.Thread(target=lambda: limiter.acquire(key, rates, background=True))
    waiter.start()
    assert _wait_until(lambda: limiter.has_background_work(key))
    scheduled.reschedule_if_quota_spent()  # the backfill is using it: start, its calls go first
    with pytest.raises(QuotaSpent) as spent:
        backfill.reschedule_if_quota_spent()  # a second background task would only wait
    assert spent.value.in_use
    waiter.join(10)
    scheduled.close()
    backfill.close()


def _hold_lane(dsn: str, key: str) -> None:
    limiter = SharedRateLimiter(dsn)
    with limiter.lane(key) as taken:
        assert taken
        time.sleep(60)


def test_one_lane_holder_per_key_and_a_dead_holder_frees_it(warehouse_dsn: str) -> None:
    limiter = SharedRateLimiter(warehouse_dsn)
    key = f"test:lane:{time.time()}"
    assert not limiter.has_background_work(key)
    with limiter.lane(key) as first:
        assert first and limiter.has_background_work(key)
        with limiter.lane(key) as second:
            assert not second
        with limiter.lane(f"{key}:other") as other_key:
            assert other_key
    assert not limiter.has_background_work(key)
    holder = mp.get_context("spawn").Process(target=_hold_lane, args=(warehouse_dsn, key))
    holder.start()
    try:
        assert _wait_until(lambda: limiter.has_background_work(key), timeout_s=30)
        holder.kill()  # a worker killed mid-task: the server drops its connection and the lane
        holder.join(10)
        assert _wait_until(lambda: not limiter.has_background_work(key), timeout_s=10)
        with limiter.lane(key) as after_death:
            assert after_death
    finally:
        if holder.is_alive():
            holder.kill()


def test_background_calls_keep_a_pace_and_cannot_spend_the_quota_in_one_burst(warehouse_dsn: str) -> None:
    """A backfill that burst an hour's quota would leave scheduled syncs no call until the hour slid
    by: background calls take a twelfth of it per twelfth of the window; scheduled ones may burst."""
    from paceline.http.limiter import background_pace

    limiter = SharedRateLimiter(warehouse_dsn)
    key = f"test:pace:{time.time()}"
    rates = (RateSpec(24, 6.0),)
    assert background_pace(rates) == (RateSpec(2, 0.5, exact=True),)
    started = time.monotonic()
    for _ in range(6):
        limiter.acquire(key, rates, background=True)
    paced = time.monotonic() - started
    assert 0.95 <= paced < 1.6, f"6 background calls took {paced:.2f}s; the pace allows 2 per 0.5 s"
    started = time.monotonic()
    for _ in range(18):
        limiter.acquire(key, rates)  # the rest of the quota is there for scheduled calls at once
    assert time.monotonic() - started < 0.8
    assert limiter.wait_s(key, rates) > 4.0


def test_a_long_wait_is_logged_once_with_the_calls_used_and_the_next_slot(
    warehouse_dsn: str, monkeypatch, caplog
) -> None:
    import logging
    import re

    limiter = SharedRateLimiter(warehouse_dsn)
    key = f"test:long-wait:SECRET-{time.time()}"
    caplog.set_level(logging.INFO, logger="paceline.http.limiter")
    monkeypatch.setenv("PACELINE_RATE_HOUR_SECONDS", "3600")  # log waits beyond 5 s: a 0.5 s window never does
    for _ in range(2):
        limiter.acquire(f"{key}:short", (RateSpec(1, 0.5),))
    assert not [r for r in caplog.records if "waits" in r.getMessage()]
    monkeypatch.setenv("PACELINE_RATE_HOUR_SECONDS", "36")  # log waits beyond 0.05 s
    for _ in range(4):
        limiter.acquire(key, (RateSpec(3, 3.0),))  # the 4th waits about 3 s
    lines = [r for r in caplog.records if "waits" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO, [r.getMessage() for r in lines]
    message = lines[0].getMessage()
    assert bucket_table(key) in message and "SECRET" not in message
    assert re.search(
        r"scheduled call waits \d+\.\ds; calls used in the window: 3/3 in [\d.]+s; next slot frees at \d\d:\d\d:\d\d UTC",
        message,
    ), message
