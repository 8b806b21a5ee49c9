"""The shared limiter: several OS processes on one key never exceed its rates and use them fully.

Timing is read where a busy machine cannot bend it: calls are judged by the stamps the limiter
wrote in its bucket table (the database clock, read under the table lock when a call was
admitted), "did not wait" by acquire()'s own answer (0.0), and waits by lower bounds only.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import threading
import time

import psycopg
import pytest
from psycopg import sql

from paceline.http.limiter import SHORT_WINDOW_MARGIN, RateSpec, SharedRateLimiter, bucket_table, pace_key

RATES = (RateSpec(5, 1.0), RateSpec(30, 10.0))
DURATION_S = 12.0


def _hammer(dsn: str, key: str, ready: mp.Queue, start_at: mp.Queue, out: mp.Queue) -> None:
    limiter = SharedRateLimiter(dsn)
    ready.put(True)  # imported and connected: a busy machine may take many seconds to get here
    until = start_at.get(timeout=300) + DURATION_S
    stamps: list[float] = []
    while time.time() < until:
        try:
            limiter.acquire(key, RATES, max_wait_s=max(0.05, until - time.time()))
        except Exception:
            break
        stamps.append(time.time())
    out.put([s for s in stamps if s <= until])


STAMPS = "SELECT extract(epoch FROM item_timestamp::timestamptz)::float8 FROM {table} ORDER BY 1"
DB_NOW = "SELECT extract(epoch FROM clock_timestamp())::float8"


def _stamps(dsn: str, key: str) -> list[float]:
    """The admission stamps of key's calls still in its bucket table (database clock, seconds)."""
    table = sql.Identifier(f"ratelimit___{bucket_table(key)}")
    with psycopg.connect(dsn) as conn:
        return [row[0] for row in conn.execute(sql.SQL(STAMPS).format(table=table)).fetchall()]


def _db_now(dsn: str) -> float:
    with psycopg.connect(dsn) as conn:
        return conn.execute(DB_NOW).fetchone()[0]


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
    ready: mp.Queue = ctx.Queue()
    start_at: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(warehouse_dsn, key, ready, start_at, out)) for _ in range(2)]
    for p in procs:
        p.start()
    for _ in procs:  # both hammers start together, however long they took to start up
        ready.get(timeout=300)
    for _ in procs:
        start_at.put(time.time())
    # The admission stamps, read from the bucket table every half second: its leak thread drops
    # calls older than the longest window every 10 s, so one read at the end would miss some.
    seen: dict[float, int] = {}

    def collect() -> None:
        try:
            snapshot = _stamps(warehouse_dsn, key)
        except psycopg.errors.UndefinedTable:  # no call admitted yet
            return
        for stamp in set(snapshot):
            seen[stamp] = max(seen.get(stamp, 0), snapshot.count(stamp))

    results: list[list[float]] = []
    deadline = time.monotonic() + DURATION_S + 120
    while len(results) < len(procs) and time.monotonic() < deadline:
        collect()
        try:
            results.append(out.get(timeout=0.5))
        except queue.Empty:
            continue
    for p in procs:
        p.join(timeout=30)
    collect()
    stamps = sorted(stamp for stamp, n in seen.items() for _ in range(n))
    assert stamps, "no call was admitted"
    assert len(results) == 2 and len(stamps) >= sum(len(r) for r in results)  # every admitted call is logged
    # Never over either rate, measured on the admission stamps with no margin for them.
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
    waits = [limiter.acquire(key, rates) for _ in range(20)]
    assert waits == [0.0] * 20, "an hourly quota must not be spread out"


def test_the_quota_spent_makes_callers_wait_not_fail(warehouse_dsn: str) -> None:
    limiter = SharedRateLimiter(warehouse_dsn)
    key = f"test:wait:{time.time()}"
    rates = (RateSpec(3, 2.0),)
    for _ in range(3):
        limiter.acquire(key, rates)
    assert limiter.acquire(key, rates) > 0.0
    stamps = _stamps(warehouse_dsn, key)
    assert stamps[3] - stamps[0] >= 2.0  # admitted only once the first call left the provider's window


def test_keys_do_not_share_quota_and_table_names_hide_credentials(warehouse_dsn: str) -> None:
    limiter = SharedRateLimiter(warehouse_dsn)
    rates = (RateSpec(2, 3600.0),)
    secret_key = f"runsignup:SECRET-API-KEY-{time.time()}"
    other_key = f"runsignup:other-{time.time()}"
    for _ in range(2):
        limiter.acquire(secret_key, rates)
    assert limiter.acquire(other_key, rates) == 0.0
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
    window = 4.0 * (1 + SHORT_WINDOW_MARGIN)
    before = _db_now(warehouse_dsn)
    first = limiter.wait_s(key, rates)
    after = _db_now(warehouse_dsn)
    oldest = _stamps(warehouse_dsn, key)[0]
    assert oldest + window - after - 0.002 <= first <= oldest + window - before + 0.002
    assert limiter.wait_s(key, rates) <= first  # peeking twice spent nothing
    assert len(_stamps(warehouse_dsn, key)) == 3
    limiter.acquire(key, rates)
    assert _stamps(warehouse_dsn, key)[3] >= after + first - 0.002  # admitted no earlier than it said


def test_wait_s_for_several_calls_waits_for_the_oldest_ones_to_leave(warehouse_dsn: str) -> None:
    limiter = SharedRateLimiter(warehouse_dsn)
    key = f"test:peek-many:{time.time()}"
    rates = (RateSpec(3, 3.0),)
    limiter.acquire(key, rates)
    time.sleep(1.0)  # only spaces the two calls: every bound below is read from their stamps
    limiter.acquire(key, rates)
    window = 3.0 * (1 + SHORT_WINDOW_MARGIN)
    first, second = _stamps(warehouse_dsn, key)
    assert limiter.wait_s(key, rates, calls=1) == 0.0  # one of three left
    before = _db_now(warehouse_dsn)
    two = limiter.wait_s(key, rates, calls=2)  # the first call must leave its window
    three = limiter.wait_s(key, rates, calls=3)  # both must leave
    ten = limiter.wait_s(key, rates, calls=10)  # never more than the quota itself
    after = _db_now(warehouse_dsn)
    assert max(0.0, first + window - after - 0.002) <= two <= first + window - before + 0.002
    assert second + window - after - 0.002 <= three <= second + window - before + 0.002
    assert second + window - after - 0.002 <= ten <= three


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
    assert _wait_until(lambda: limiter.has_waiter(key), 3.0), "a caller waiting for the quota is not visible"
    newcomer = ApiSession("http://127.0.0.1:9", limiter=limiter, limiter_key=key, rates=rates)
    with pytest.raises(QuotaSpent) as spent:
        newcomer.reschedule_if_quota_spent()  # the next call is < 6 s away, but someone waits for it
    assert spent.value.in_use and spent.value.wait_s == pytest.approx(6.0)
    waiter.join(30)
    assert waited and waited[0] > 0.0
    stamps = _stamps(warehouse_dsn, key)
    assert stamps[2] - stamps[0] >= 3.0  # the waiter went in when the first call left the window
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


def _hold_lane(dsn: str, key: str, taken_queue: mp.Queue) -> None:
    limiter = SharedRateLimiter(dsn)
    with limiter.lane(key) as taken:
        taken_queue.put(bool(taken))  # a LaneHold holds its connection: send the verdict
        time.sleep(600)  # killed long before


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
    ctx = mp.get_context("spawn")
    taken_queue: mp.Queue = ctx.Queue()
    holder = ctx.Process(target=_hold_lane, args=(warehouse_dsn, key, taken_queue))
    holder.start()
    try:
        assert taken_queue.get(timeout=300)  # however long a busy machine takes to start the process
        assert limiter.has_background_work(key)
        holder.kill()  # a worker killed mid-task: the server drops its connection and the lane
        holder.join(30)
        assert _wait_until(lambda: not limiter.has_background_work(key), timeout_s=60)
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
    for _ in range(6):
        limiter.acquire(key, rates, background=True)
    paced = _stamps(warehouse_dsn, pace_key(key))
    assert len(paced) == 6 and _max_in_window(paced, 0.5) <= 2  # never more than 2 per 0.5 s
    assert paced[-1] - paced[0] >= 0.95, f"6 background calls in {paced[-1] - paced[0]:.2f}s"
    waits = [limiter.acquire(key, rates) for _ in range(18)]
    assert waits == [0.0] * 18  # the rest of the quota is there for scheduled calls at once
    assert limiter.wait_s(key, rates) > 0.0  # and then it is spent


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
