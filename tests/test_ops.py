"""`paceline status` and `paceline quota` on the real embedded PostgreSQL: audit rows, events,
the limiter's own buckets and advisory locks."""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid

import psycopg
import pytest

from paceline.http.limiter import RateSpec, SharedRateLimiter
from paceline.ops import quota, status
from paceline.ops.render import render_quota

NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)

INSERT_AUDIT = """
INSERT INTO paceline.sync_audit (provider, integration_id, unit, sync_type, status, error, dag_id, run_id,
                                 estimated_size, actual_size, calls, started_at, finished_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""


def audit(conn, *, provider="haku", integration=None, unit="e1", status_="success", error=None, dag="haku_sync",
          run="r1", estimated=None, actual=None, calls=1, ago=dt.timedelta(minutes=5), now=NOW) -> None:  # fmt: skip
    finished = now - ago
    conn.execute(INSERT_AUDIT, (provider, integration, unit, "full", status_, error, dag, run, estimated, actual, calls,
                                finished - dt.timedelta(seconds=30), finished))  # fmt: skip


@pytest.fixture
def integrations(warehouse: str):
    """Three Haku integrations of a fresh partner, with events 1, 30 and 200 days away."""
    tag = uuid.uuid4().hex[:8]
    partner = int(uuid.uuid4().int % 1_000_000) + 5_000_000
    ids = {"near": f"ops-near-{tag}", "far": f"ops-far-{tag}", "never": f"ops-never-{tag}"}
    with psycopg.connect(warehouse, autocommit=True) as conn:
        conn.execute("INSERT INTO registrations.timing_partners VALUES (%s, %s)", (partner, f"ops {tag}"))
        for integration_id in ids.values():
            conn.execute(
                "INSERT INTO registrations.provider_integrations (integration_id, provider, timing_partner_id, conn_id)"
                " VALUES (%s, 'haku', %s, %s)",
                (integration_id, partner, f"conn_{integration_id}"),
            )
        for name, days in (("near", 1), ("far", 200), ("never", 30)):
            conn.execute(
                "INSERT INTO registrations.haku_events (timing_partner_id, event_id, integration_id, name, event_date)"
                " VALUES (%s, %s, %s, 'x', %s)",
                (partner, f"ev-{name}-{tag}", ids[name], NOW.date() + dt.timedelta(days=days)),
            )
    yield ids
    with psycopg.connect(warehouse, autocommit=True) as conn:
        conn.execute("DELETE FROM registrations.haku_events WHERE timing_partner_id = %s", (partner,))
        conn.execute("DELETE FROM registrations.provider_integrations WHERE timing_partner_id = %s", (partner,))
        conn.execute("DELETE FROM registrations.timing_partners WHERE timing_partner_id = %s", (partner,))


def test_status_judges_each_integration_against_its_nearest_events_tier(warehouse: str, integrations: dict) -> None:
    with psycopg.connect(warehouse, autocommit=True) as conn:
        # near: an event tomorrow asks for every 15 minutes; its last success is 2 hours old
        audit(conn, integration=integrations["near"], ago=dt.timedelta(hours=2))
        audit(conn, integration=integrations["near"], unit="plan", ago=dt.timedelta(minutes=1))  # a plan is no sync
        # far: an event 200 days away asks for daily; 3 hours old is fresh
        audit(conn, integration=integrations["far"], ago=dt.timedelta(hours=3))
        rows = {r["integration_id"]: r for r in status.integration_status(conn, now=NOW)}
    near, far, never = (rows[integrations[k]] for k in ("near", "far", "never"))
    assert (near["state"], near["target_s"], near["age_s"]) == ("stale", 15 * 60, 2 * 3600)
    assert near["nearest_event_days"] == 1
    assert (far["state"], far["target_s"]) == ("fresh", 24 * 3600)
    assert (never["state"], never["last_success_at"], never["target_s"]) == ("never", None, 6 * 3600)
    assert rows["racing_api"]["state"] == "never"


def test_status_counts_the_failures_of_the_last_runs(warehouse: str, integrations: dict) -> None:
    iid = integrations["near"]
    with psycopg.connect(warehouse, autocommit=True) as conn:
        for n in range(7):  # seven runs, oldest first; the 2nd newest and the oldest failed an event
            ago = dt.timedelta(minutes=15 * (7 - n))
            audit(conn, integration=iid, run=f"run{n}", unit="a", ago=ago)
            failed = n in (0, 5)
            audit(conn, integration=iid, run=f"run{n}", unit="b", ago=ago, status_="failed" if failed else "success",
                  error="PermanentApiError: 403 Forbidden" if failed else None)  # fmt: skip
        row = next(r for r in status.integration_status(conn, now=NOW, runs=5) if r["integration_id"] == iid)
    assert [r["run_id"] for r in row["runs"]] == ["run6", "run5", "run4", "run3", "run2"]
    assert row["failed_runs"] == 1
    failed = row["runs"][1]
    assert (failed["units"], failed["failed"], failed["last_error"]) == (2, 1, "PermanentApiError: 403 Forbidden")


def test_racing_progress_counts_whole_months_and_extrapolates_the_last_hour(warehouse: str) -> None:
    now = dt.datetime(2015, 3, 10, 12, 0, tzinfo=dt.UTC)  # 69 days since 2015-01-01, 3 months
    with psycopg.connect(warehouse, autocommit=True) as conn:
        for i in range(31):  # January, loaded long ago
            day = dt.date(2015, 1, 1) + dt.timedelta(days=i)
            audit(conn, provider="racing_api", unit=day.isoformat(), dag="racing_events", ago=dt.timedelta(days=2), now=now)
        for i in range(10):  # ten February days in the last hour; one of them twice (a cleared task)
            day = dt.date(2015, 2, 1) + dt.timedelta(days=i)
            audit(conn, provider="racing_api", unit=day.isoformat(), dag="racing_events", ago=dt.timedelta(minutes=30), now=now)
        audit(conn, provider="racing_api", unit="2015-02-01", dag="racing_events", ago=dt.timedelta(minutes=10), now=now)
        audit(conn, provider="racing_api", unit="2015-02-11", dag="racing_events", status_="failed", now=now)
        progress = status.racing_progress(conn, now=now)
    assert (progress["days_done"], progress["days_total"]) == (41, 69)
    assert (progress["months_done"], progress["months_total"]) == (1, 3)
    assert progress["days_per_hour"] == 10
    assert progress["eta_hours"] == pytest.approx(2.8)  # 28 days to go at 10 an hour


def test_haku_backfill_progress_against_the_estimate(warehouse: str) -> None:
    with psycopg.connect(warehouse, autocommit=True) as conn:
        bf = {"dag": "haku_backfill", "run": "backfill__1"}
        audit(conn, integration="a", unit="estimate", estimated=1000, ago=dt.timedelta(hours=3), **bf)
        audit(conn, integration="b", unit="estimate", estimated=500, ago=dt.timedelta(hours=3), **bf)
        audit(conn, integration="a", unit="e1", actual=300, ago=dt.timedelta(hours=2), **bf)
        audit(conn, integration="a", unit="e2", actual=200, ago=dt.timedelta(minutes=20), **bf)
        audit(conn, integration="b", unit="e3", status_="failed", ago=dt.timedelta(minutes=50), **bf)
        audit(conn, integration="b", unit="e3", actual=100, ago=dt.timedelta(minutes=40), **bf)  # cleared, then done
        audit(conn, integration="b", unit="e4", status_="failed", ago=dt.timedelta(minutes=30), **bf)
        audit(conn, integration="a", unit="e1", actual=999, dag="haku_sync", run="other")  # another DAG: not counted
        progress = status.haku_backfill_progress(conn, now=NOW)
        report = status.status_report(conn, now=NOW)
    assert progress["run_id"] == "backfill__1"
    assert (progress["registrations_done"], progress["registrations_estimated"]) == (600, 1500)
    assert (progress["events_done"], progress["events_failed"], progress["integrations"]) == (3, 1, 2)
    assert progress["registrations_per_hour"] == 300
    assert progress["eta_hours"] == pytest.approx(3.0)  # 900 to go at 300 an hour
    assert [b["name"] for b in report["backfills"]] == ["racing_events", "haku_backfill"]
    json.dumps(report)  # plain data for --json and the UI


RATES = (RateSpec(3, 3600.0),)


def test_quota_counts_calls_in_the_window_and_says_when_the_next_one_fits(warehouse: str) -> None:
    key = f"test:ops-quota:{uuid.uuid4().hex}"
    limiter = SharedRateLimiter(warehouse)
    credential = quota.Credential("conn_x", "haku", key, RATES, ["ops-x"])
    with psycopg.connect(warehouse, autocommit=True) as conn:
        [fresh] = quota.quota_snapshot(conn, [credential])
        assert fresh["windows"][0]["calls"] == 0 and fresh["next_free_in_s"] == 0
        for _ in range(2):
            limiter.acquire(key, RATES)
        [two] = quota.quota_snapshot(conn, [credential])
        assert (two["windows"][0]["calls"], two["windows"][0]["limit"], two["next_free_in_s"]) == (2, 3, 0)
        limiter.acquire(key, RATES)
        [spent] = quota.quota_snapshot(conn, [credential])
    assert spent["windows"][0]["calls"] == 3
    assert spent["next_free_in_s"] > 3000  # the hour (plus its margin) must pass for the oldest call
    assert spent["integrations"] == ["ops-x"]
    assert key not in json.dumps(spent)  # the key holds a login: never shown


def test_quota_separates_background_calls_and_shows_who_holds_the_rooms(warehouse: str, monkeypatch) -> None:
    key = f"test:ops-rooms:{uuid.uuid4().hex}"
    rates = (RateSpec(120, 3600.0),)  # a pace of 10 per 5 minutes for background calls
    limiter = SharedRateLimiter(warehouse)
    credential = quota.Credential("conn_y", "haku", key, rates)
    for _ in range(3):
        limiter.acquire(key, rates)
    for _ in range(2):
        limiter.acquire(key, rates, background=True)
    with psycopg.connect(warehouse, autocommit=True) as conn:
        [idle] = quota.quota_snapshot(conn, [credential])
        for name, value in (("DAG_ID", "haku_backfill"), ("TASK_ID", "sync_large"), ("MAP_INDEX", "3")):
            monkeypatch.setenv(f"AIRFLOW_CTX_{name}", value)  # what Airflow sets in a task's process
        with limiter.waiting_room(key), limiter.lane(key) as taken:
            assert taken
            [busy] = quota.quota_snapshot(conn, [credential])
            taken.expect_done_in(1800)  # the holder says when it expects to be done
            [saying] = quota.quota_snapshot(conn, [credential])
    assert idle["recent"] == {"window_s": 300.0, "calls": 5, "background": 2, "scheduled": 3, "background_pace_limit": 10}
    assert not idle["waiting_room"]["held"] and not idle["lane"]["held"]
    assert busy["waiting_room"]["held"] and busy["lane"]["held"]
    assert busy["waiting_room"]["holder"]["pid"] != busy["lane"]["holder"]["pid"]  # each on a connection of its own
    assert busy["lane"]["holder"]["application_name"] == "haku_backfill.sync_large[3]"
    table = render_quota([busy])  # what `paceline quota` prints
    assert "haku_backfill.sync_large[3] since" in table and "3 sched / 2 bg per 5m" in table
    assert not busy["background_room"]["held"]
    assert busy["lane"]["holder"]["expects_done_at"] is None
    assert saying["lane"]["holder"]["application_name"] == "haku_backfill.sync_large[3]"  # the estimate apart
    done_at = dt.datetime.fromisoformat(saying["lane"]["holder"]["expects_done_at"])
    assert 1700 < (done_at - dt.datetime.now(dt.UTC)).total_seconds() <= 1800.1
    assert ", done ~" in render_quota([saying])


def test_known_credentials_key_integrations_like_their_hooks(warehouse: str, monkeypatch) -> None:
    tag = uuid.uuid4().hex[:8]
    partner = int(uuid.uuid4().int % 1_000_000) + 6_000_000
    conn_id = f"ops_rsu_{tag}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(
        {"conn_type": "runsignup", "host": "http://127.0.0.1:9", "login": f"key-{tag}", "password": "secret"}))  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_RACING_API", json.dumps({"conn_type": "racing_api", "login": "u", "password": "p"}))
    with psycopg.connect(warehouse, autocommit=True) as conn:
        conn.execute("INSERT INTO registrations.timing_partners VALUES (%s, 'ops')", (partner,))
        for n, missing in ((1, False), (2, False), (3, True)):  # two share one login; one names no connection
            conn.execute(
                "INSERT INTO registrations.provider_integrations (integration_id, provider, timing_partner_id, conn_id,"
                " calls_per_hour) VALUES (%s, 'runsignup', %s, %s, 50)",
                (f"ops-{tag}-{n}", partner, f"absent_{tag}" if missing else conn_id),
            )
        try:
            credentials = [c for c in quota.known_credentials(conn) if tag in c.label]
            racing = [c for c in quota.known_credentials(conn) if c.provider == "racing_api"]
        finally:
            conn.execute("DELETE FROM registrations.provider_integrations WHERE timing_partner_id = %s", (partner,))
            conn.execute("DELETE FROM registrations.timing_partners WHERE timing_partner_id = %s", (partner,))
    shared, absent = sorted(credentials, key=lambda c: c.label, reverse=True)
    assert shared.label == conn_id and shared.integrations == [f"ops-{tag}-1", f"ops-{tag}-2"]
    assert shared.key == f"runsignup:key-{tag}" and shared.rates[0].limit == 50
    assert absent.error and "absent_" in absent.error
    assert racing and racing[0].key == "racing_api:u"
    assert os.environ.get("AIRFLOW_CONN_PACELINE_WAREHOUSE")  # the fixture's, untouched
