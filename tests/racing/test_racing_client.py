"""The Racing API hook and client: connection, parameter bounds, racecard window, throttles, 2 rps."""

from __future__ import annotations

import time
from datetime import date, timedelta

import pytest
import requests

from paceline.http.limiter import RateSpec
from paceline.http.session import RetryPolicy
from paceline.providers.racing_api.client import ParameterOutOfBounds, RacingApiClient, racecards_available
from paceline.providers.racing_api.hook import RacingApiHook, empty_page_is_throttle

from .conftest import fast_client


def test_hook_reads_an_http_connection_and_tests_it(racing_api, standin):
    hook = RacingApiHook(use_limiter=False)
    assert hook.base_url == racing_api.url
    ok, message = hook.test_connection()
    assert ok, message
    assert standin.stats()["calls"]["paceline"]["courses/regions"] == 1
    behaviour = RacingApiHook.get_ui_field_behaviour()
    assert behaviour["relabeling"]["login"] == "Username" and "extra" in behaviour["hidden_fields"]
    assert (RacingApiHook.conn_type, RacingApiHook.hook_name) == ("racing_api", "The Racing API")


def test_bad_credentials_fail_the_connection_test(racing_api, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_RACING_API",
        f'{{"conn_type": "racing_api", "host": "{racing_api.url}", "login": "x", "password": "y"}}',
    )
    ok, message = RacingApiHook(use_limiter=False).test_connection()
    assert not ok and "401" in message


def test_a_page_without_total_is_a_throttle_not_data():
    assert empty_page_is_throttle(None, {"results": [], "total": None}).throttled
    assert empty_page_is_throttle(None, {"racecards": [], "limit": 500, "skip": 0}).throttled
    assert empty_page_is_throttle(None, {"results": [], "total": 0}) is None
    assert empty_page_is_throttle(None, [{"region": "Great Britain", "region_code": "gb"}]) is None
    assert empty_page_is_throttle(None, {"race_id": "rac_1", "runners": []}) is None


def test_parameters_outside_the_spec_are_never_sent(racing_api, standin):
    client = fast_client()
    day = date(2024, 1, 5)
    for call in (
        lambda: client.results_for_day(day, limit=101),
        lambda: client.results_for_day(day, limit=0),
        lambda: client.racecards_pro(day, limit=501),
        lambda: client.results_range(date(2023, 1, 1), date(2024, 1, 2)),
        lambda: client.results_range(day, day - timedelta(days=1)),
        lambda: client.courses(["gb,ire"]),
        lambda: client.results_for_day(day, region_codes=[]),
    ):
        with pytest.raises(ParameterOutOfBounds):
            call()
    assert standin.stats()["total_calls"] == 0
    # Inside the bounds, a small page size pages with skip until total, and nothing is refused.
    small = client.results_for_day(day, limit=1)
    assert [r["race_id"] for r in small] == [r["race_id"] for r in standin.results_for(day)]
    assert client.session.stats.calls == len(small)
    assert 422 not in client.session.stats.by_status


def test_racecards_outside_the_available_window_are_skipped_without_a_call(racing_api, standin):
    client = fast_client()
    today = client.today
    assert client.racecards_pro(date(2023, 1, 22)) == []
    assert client.racecards_pro(today + timedelta(days=8)) == []
    assert standin.stats()["total_calls"] == 0
    assert racecards_available(date(2023, 1, 23), today) and racecards_available(
        today + timedelta(days=7), today
    )
    assert client.results_for_day(today + timedelta(days=1)) == []  # no results for the future, no call
    assert standin.stats()["total_calls"] == 0
    cards = client.racecards_pro(today + timedelta(days=7))
    assert len(cards) == len(standin.racecards_for(today + timedelta(days=7)))


def test_result_by_id(racing_api, standin):
    race = standin.results_for(date(2024, 1, 4))[0]
    assert fast_client().result(race["race_id"]) == race


def test_shared_limiter_keeps_two_requests_per_second(racing_db, racing_api, standin):
    """Real rate: the stand-in enforces 2/s per credential; two clients share the limiter."""
    requests.post(f"{racing_api.url}/_control/knobs", json={"per_second": 2.0}, timeout=5)
    retry = RetryPolicy(base_s=0.01, throttle_wait_s=0.05)
    clients = [RacingApiClient(RacingApiHook(retry=retry)) for _ in range(2)]
    days = [date(2024, 1, 1) + timedelta(days=i) for i in range(6)]
    started = time.monotonic()
    for day in days:
        for client in clients:  # interleaved: 12 calls on one credential through two sessions
            client.results_for_day(day)
    elapsed = time.monotonic() - started
    calls = sum(c.calls for c in clients)
    assert calls == 12
    assert sum(c.throttles for c in clients) == 0
    assert standin.stats()["throttles"] == {}
    assert elapsed >= (calls - 2) / 2 * 0.95, elapsed  # a burst of 2, then 2 per second
    # how close to 2/s it runs is bench/racing_backfill.py's figure: a busy machine may only be slower


def test_a_settled_rate_logs_a_call_when_its_answer_is_back(racing_db) -> None:
    """The Racing API's rates are settled: a call is logged at admission + 50 ms while in flight,
    then at the moment its answer is back if sooner; the window is the provider's second exactly."""
    import psycopg
    from psycopg import sql

    from paceline.http.limiter import IN_FLIGHT_HOLD_MS, SharedRateLimiter, bucket_table
    from paceline.providers.racing_api.hook import DEFAULT_RATES

    assert all(r.settled for r in DEFAULT_RATES) and DEFAULT_RATES[0].to_rate().interval == 1000
    limiter = SharedRateLimiter(racing_db)
    key = f"racing_api:settle-{time.time()}"
    limiter.acquire(key, DEFAULT_RATES)
    bucket = limiter._buckets[(key, DEFAULT_RATES)]
    name, admitted = bucket._pending.name, bucket._pending.admitted_ms
    stamp_sql = sql.SQL("SELECT (extract(epoch FROM item_timestamp::timestamptz) * 1000)::bigint FROM {} WHERE name = %s")
    now_sql = "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
    with psycopg.connect(racing_db, autocommit=True) as conn:
        table = sql.Identifier(f"ratelimit___{bucket_table(key)}")

        def stamp() -> int:
            return conn.execute(stamp_sql.format(table), (name,)).fetchone()[0]

        assert abs(stamp() - (admitted + IN_FLIGHT_HOLD_MS)) <= 1  # provisional while in flight
        before = conn.execute(now_sql).fetchone()[0]
        limiter.settle(key, DEFAULT_RATES)
        after = conn.execute(now_sql).fetchone()[0]
        provisional = admitted + IN_FLIGHT_HOLD_MS
        assert min(provisional, before) - 1 <= stamp() <= min(provisional, after) + 1
        assert stamp() >= admitted - 1, "never earlier than its admission"
    assert bucket._pending.name is None
    limiter.settle(key, DEFAULT_RATES)  # nothing pending: a no-op
    # A call in flight holds its slot (its stamp is far ahead), but wait_s() counts it as answered
    # now: the next call is under a second away, not the hold's 70 s.
    other = f"{key}-in-flight"
    limiter.acquire(other, DEFAULT_RATES)
    limiter.acquire(other, DEFAULT_RATES)
    assert 0.0 < limiter.wait_s(other, DEFAULT_RATES) <= 1.0
    # An unsettled rate (a margin instead) is never moved.
    plain = (RateSpec(2, 1.0),)
    limiter.acquire(key + "-plain", plain)
    assert limiter._buckets[(key + "-plain", plain)]._pending.name is None


def test_a_call_taken_ahead_of_its_slot_goes_out_no_sooner_than_the_slot(racing_db) -> None:
    """A settled rate's caller takes its slot up to ADMIT_AHEAD_MS early and sleeps the rest inside
    acquire(): each call leaves acquire() at least a window after the answer two calls back."""
    from paceline.http.limiter import SharedRateLimiter
    from paceline.providers.racing_api.hook import DEFAULT_RATES

    limiter = SharedRateLimiter(racing_db)
    key = f"racing_api:ahead-{time.time()}"
    answers: list[float] = []
    for n in range(6):
        limiter.acquire(key, DEFAULT_RATES)
        sent = time.monotonic()
        bucket = limiter._buckets[(key, DEFAULT_RATES)]
        assert bucket._pending.send_at == 0.0, "the wait for the slot time is done inside acquire()"
        if n >= 2:
            # 2 ms of slack: the database keeps whole milliseconds
            assert sent - answers[n - 2] >= 1.0 - 0.002, f"call {n} sent {sent - answers[n - 2]:.4f}s after answer {n - 2}"
        answers.append(time.monotonic())  # before settle(): the logged answer is no sooner than this
        limiter.settle(key, DEFAULT_RATES)
