"""runsignup_sync against the RunSignUp stand-in and the embedded PostgreSQL warehouse.

Tests call plan / sync_batch / sync_event directly (no scheduler). Time is scaled: tiny retry and
throttle waits, and the quota's hour shortened through PACELINE_RATE_HOUR_SECONDS.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import requests

from paceline.http.session import PermanentApiError, RetryPolicy, TransientApiError
from paceline.providers.runsignup.client import RunSignUpClient
from paceline.registrations import engine
from paceline.registrations import runsignup_sync as rsu
from paceline.sandbox import base as sandbox_base
from paceline.sandbox import runsignup as rsu_standin
from tests.registrations.rescheduling import run_rescheduling

FAST = RetryPolicy(attempts=8, base_s=0.01, max_s=0.05, throttle_wait_s=0.02, throttle_max_wait_s=60)
ALL = {"due_only": False}

DELETE_RSU = [
    "DELETE FROM registrations.runsignup_participants",
    "DELETE FROM registrations.runsignup_events",
    "DELETE FROM registrations.provider_integrations WHERE provider = 'runsignup'",
]
INSERT_PARTNER = "INSERT INTO registrations.timing_partners VALUES (%s, %s) ON CONFLICT DO NOTHING"
INSERT_INTEGRATION = """
INSERT INTO registrations.provider_integrations
    (integration_id, provider, timing_partner_id, organization, conn_id, enabled, calls_per_hour)
VALUES (%s, %s, %s, %s, %s, true, %s)
"""
SELECT_ROWS = """
SELECT race_id, event_id, registration_id, email, last_name, bib_num, last_modified, removed_reason, raw, synced_at
FROM registrations.runsignup_participants WHERE timing_partner_id = %s
"""


class Sandbox:
    """A running stand-in, its integrations registered in the warehouse and as Airflow connections."""

    def __init__(self, dsn: str, monkeypatch: pytest.MonkeyPatch, calls_per_hour: int | None = None) -> None:
        self.dsn = dsn
        self.standin = rsu_standin.build("small", seed=7)
        self.server = sandbox_base.serve(self.standin)
        self.integrations = self.standin.integrations()
        with psycopg.connect(dsn, autocommit=True) as conn:
            for statement in DELETE_RSU:
                conn.execute(statement)
            for i in self.integrations:
                conn.execute(INSERT_PARTNER, (i["timing_partner_id"], i["timing_partner_name"]))
                conn.execute(INSERT_INTEGRATION, (i["integration_id"], "runsignup", i["timing_partner_id"],
                                                  i["organization"], i["conn_id"], calls_per_hour))
        for i in self.integrations:
            monkeypatch.setenv(f"AIRFLOW_CONN_{i['conn_id'].upper()}", json.dumps(
                {"conn_type": "runsignup", "host": f"{self.server.url}/Rest", "login": i["login"], "password": i["password"]}))

    def by_tp(self, tp: int) -> dict[str, Any]:
        return next(i for i in self.integrations if i["timing_partner_id"] == tp)

    def control(self, path: str, payload: dict[str, Any] | None = None) -> Any:
        if payload is None:
            return requests.get(f"{self.server.url}/_control/{path}", timeout=10).json()
        response = requests.post(f"{self.server.url}/_control/{path}", json=payload, timeout=10)
        response.raise_for_status()
        return response.json()

    def run(self, params: dict[str, Any] | None = None, now: datetime | None = None) -> list[dict[str, Any]]:
        """plan, then every mapped item in turn; returns the event summaries."""
        summaries = []
        for item in rsu.plan(params or {}, now, retry=FAST):
            summaries.extend(run_rescheduling(rsu.sync_batch, item, params or {}, retry=FAST)["events"])
        return summaries

    def rows(self, tp: int) -> dict[tuple[int, int, int], tuple]:
        with psycopg.connect(self.dsn) as conn:
            return {(r[0], r[1], r[2]): r[3:] for r in conn.execute(SELECT_ROWS, (tp,))}

    def scalar(self, query: str, params: tuple = ()) -> Any:
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(query, params).fetchone()[0]

    def assert_matches_truth(self, tp: int, event_ids: set[int]) -> None:
        truth = {k: v for k, v in self.standin.ground_truth(self.by_tp(tp)["login"]).items() if k[1] in event_ids}
        rows = {k: v for k, v in self.rows(tp).items() if k[1] in event_ids}
        assert set(rows) == set(truth), (len(set(truth) - set(rows)), len(set(rows) - set(truth)))
        for key, record in truth.items():
            email, last_name, bib, last_modified, removed_reason, raw, _ = rows[key]
            assert removed_reason == record.get("removed_reason"), key
            assert last_modified == (record["last_modified_ts"] if removed_reason else record["last_modified"]), key
            assert raw == record, key
            assert email == record["user"]["email"] and last_name == record["user"]["last_name"]
            assert bib == (None if record["bib_num"] is None else str(record["bib_num"]))

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def sandbox(warehouse, monkeypatch):
    monkeypatch.setenv("PACELINE_RATE_HOUR_SECONDS", "60")
    box = Sandbox(warehouse, monkeypatch)
    yield box
    box.stop()


def race_calls(summaries: list[dict[str, Any]], race_id: int) -> int:
    return sum(s["calls"] for s in summaries if s["race_id"] == race_id)


def synced_events(summaries: list[dict[str, Any]], tp: int) -> set[int]:
    return {s["event_id"] for s in summaries if s["timing_partner_id"] == tp}


def test_full_then_incremental_equals_ground_truth(sandbox: Sandbox) -> None:
    first = sandbox.run()
    assert first and {s["sync_type"] for s in first} == {"full"}
    for tp in (1, 2):
        sandbox.assert_matches_truth(tp, synced_events(first, tp))
    big = next(s for s in first if s["participants"] > 2500)  # the 2,600-runner half marathon: two pages
    # its race's two events share their calls: participants 2 pages (the 5K leaves after the first), removed 1
    assert race_calls(first, big["race_id"]) == 3

    login = sandbox.by_tp(1)["login"]
    sandbox.control("mutate", {"action": "modify_participants", "login": login, "future_only": True, "fraction": 0.05})
    sandbox.control("mutate", {"action": "add_participants", "login": login, "future_only": True, "n": 25})
    removed = sandbox.control("mutate", {"action": "remove_participants", "login": login, "future_only": True, "n": 12})
    assert removed["result"]["count"] == 12
    second = sandbox.run(ALL)
    assert {s["sync_type"] for s in second} == {"incremental"}
    for tp in (1, 2):
        sandbox.assert_matches_truth(tp, synced_events(first, tp))
    tp1 = [s for s in second if s["timing_partner_id"] == 1]
    assert sum(s["inserted"] for s in tp1) >= 25  # added (plus transfer targets)
    assert sum(s["removed"] for s in tp1) == 12
    assert sum(s["updated"] for s in tp1) > 0
    # incremental pages are short: two calls per race, whatever its number of events
    assert all(race_calls(second, race) == 2 for race in {s["race_id"] for s in second})
    with psycopg.connect(sandbox.dsn) as conn:
        audit_types = dict(conn.execute(
            "SELECT sync_type, count(*) FROM paceline.sync_audit WHERE provider = 'runsignup' AND status = 'success' "
            "GROUP BY sync_type").fetchall())
    # and one listing ("races", unit "plan") per integration and plan
    assert audit_types == {"full": len(first), "incremental": len(second), "races": 2 * 2}


def test_page_boundary_of_exactly_2500(sandbox: Sandbox) -> None:
    tp1 = sandbox.by_tp(1)
    event = next(e for e in sandbox.standin.events_for(tp1["login"]) if e["participant_count"] == 2600)
    sandbox.control("mutate", {"action": "remove_participants", "event_id": event["event_id"], "n": 100, "reason": "removed"})
    assert next(e for e in sandbox.standin.events_for(tp1["login"])
                if e["event_id"] == event["event_id"])["participant_count"] == 2500
    summaries = sandbox.run({"timing_partner_id": 1})
    mine = next(s for s in summaries if s["event_id"] == event["event_id"])
    assert mine["participants"] == 2500
    assert race_calls(summaries, event["race_id"]) == 3  # a full page of 2,500, then an empty one; removals 1
    sandbox.assert_matches_truth(1, synced_events(summaries, 1))
    # one more registration: 2,501 → the second page holds one record
    sandbox.control("mutate", {"action": "add_participants", "event_id": event["event_id"], "n": 1})
    again = sandbox.run({"timing_partner_id": 1, "force_full_sync": True})
    assert next(s for s in again if s["event_id"] == event["event_id"])["participants"] == 2501
    sandbox.assert_matches_truth(1, synced_events(again, 1))


def test_identical_rerun_changes_nothing(sandbox: Sandbox) -> None:
    first = sandbox.run()
    before = {tp: sandbox.rows(tp) for tp in (1, 2)}
    for params in (ALL, {"force_full_sync": True}):
        again = sandbox.run(params)
        assert len(again) == len(first)
        assert all(s["inserted"] == s["updated"] == s["removed"] == s["rejected"] == 0 for s in again), again
        assert {tp: sandbox.rows(tp) for tp in (1, 2)} == before  # synced_at included: nothing rewritten


def test_throttle_storm_error_14_is_waited_out(sandbox: Sandbox) -> None:
    # error 14 for the next 10 calls, more than FAST's 8 attempts: a storm, driven by count not by the clock
    sandbox.control("knobs", {"throttle_next": 10})
    summaries = sandbox.run()
    stats = sandbox.control("stats")
    assert sum(stats["throttles"].values()) >= 10 and stats["knobs"]["throttle_next"] == 0
    for tp in (1, 2):
        sandbox.assert_matches_truth(tp, synced_events(summaries, tp))


def test_quota_from_provider_integrations_avoids_throttles(warehouse, monkeypatch) -> None:
    # calls_per_hour=2 with a 6 s "hour" on both sides: the shared limiter waits, the provider never
    # throttles. (The limiter's window is 1% longer than the provider's, 60 ms here: a shorter hour
    # leaves a busy machine's scheduling jitter more than that margin.)
    monkeypatch.setenv("PACELINE_RATE_HOUR_SECONDS", "6")
    box = Sandbox(warehouse, monkeypatch, calls_per_hour=2)
    try:
        box.control("knobs", {"per_hour": 2, "time_scale": 6 / 3600})
        started = time.monotonic()
        summaries = box.run({"timing_partner_id": 2})
        elapsed = time.monotonic() - started
        calls = sum(s["calls"] for s in summaries) + 1  # + the race list
        assert box.control("stats")["throttles"] == {}
        assert calls > 2 and elapsed >= (calls - 2) / 2 * 6 * 0.9  # the limiter spread them over the quota (2 per 6 s)
        box.assert_matches_truth(2, synced_events(summaries, 2))
    finally:
        box.stop()


def test_a_spent_quota_reschedules_the_task_before_it_does_anything(warehouse, monkeypatch) -> None:
    from airflow.sdk.exceptions import AirflowRescheduleException

    from paceline.http.limiter import QuotaSpent
    from paceline.registrations.planning import Integration

    monkeypatch.setenv("PACELINE_RATE_HOUR_SECONDS", "60")  # tasks reschedule beyond a 1 s wait
    box = Sandbox(warehouse, monkeypatch, calls_per_hour=20)
    try:
        (item, *_) = rsu.plan({"timing_partner_id": 2}, retry=FAST)
        client = rsu.make_client(Integration.from_dict(item["events"][0]["integration"]), FAST)
        session = client.session
        while session.limiter.wait_s(session.limiter_key, session.rates) <= 1:  # spend the rest of the quota
            session.limiter.acquire(session.limiter_key, session.rates)
        client.close()
        calls_before = box.control("stats")["total_calls"]
        audited_before = box.scalar("SELECT count(*) FROM paceline.sync_audit WHERE provider = 'runsignup'")
        with pytest.raises(QuotaSpent) as spent:
            rsu.sync_batch(item, {}, retry=FAST)
        assert isinstance(spent.value, AirflowRescheduleException) and 1 < spent.value.wait_s <= 61
        # nothing was called and nothing written: the rescheduled task starts from the same place
        assert box.control("stats")["total_calls"] == calls_before
        assert box.scalar("SELECT count(*) FROM paceline.sync_audit WHERE provider = 'runsignup'") == audited_before
    finally:
        box.stop()


def test_random_5xx_are_retried(sandbox: Sandbox) -> None:
    sandbox.control("knobs", {"error_rate": 0.1})
    summaries = sandbox.run()
    assert sandbox.control("stats")["errors_injected"] > 0
    for tp in (1, 2):
        sandbox.assert_matches_truth(tp, synced_events(summaries, tp))


def test_malformed_record_is_rejected_and_the_event_commits(sandbox: Sandbox) -> None:
    sandbox.control("knobs", {"malformed_rate": 0.01})
    first = sandbox.run()
    rejected = sum(s["rejected"] for s in first)
    assert rejected > 0
    assert sandbox.scalar("SELECT count(*) FROM paceline.rejected_records WHERE provider = 'runsignup'") == rejected
    assert sandbox.scalar("SELECT count(*) FROM paceline.sync_audit WHERE status = 'success' AND unit <> 'plan'") == len(first)
    reasons = sandbox.scalar("SELECT string_agg(reason, ' | ') FROM paceline.rejected_records")
    assert "registration_id" in reasons or "last_modified" in reasons or "user" in reasons
    # once the provider serves them properly, the held-back cursor brings the rejected records in
    sandbox.control("knobs", {"malformed_rate": 0.0})
    sandbox.run(ALL)
    for tp in (1, 2):
        sandbox.assert_matches_truth(tp, synced_events(first, tp))


def test_sync_killed_mid_event_leaves_it_as_before(sandbox: Sandbox, monkeypatch) -> None:
    first = sandbox.run()
    sandbox.control("mutate", {"action": "modify_participants", "login": sandbox.by_tp(1)["login"],
                               "future_only": True, "fraction": 0.1})
    before = sandbox.rows(1)
    cursors = sandbox.scalar("SELECT json_agg(cursor_value ORDER BY scope) FROM paceline.watermarks")

    def die(*args: Any, **kwargs: Any) -> None:  # after the participants upsert, before the commit
        raise RuntimeError("worker killed")

    advance = rsu.watermarks.advance
    monkeypatch.setattr(rsu.watermarks, "advance", die)
    items = rsu.plan({"timing_partner_id": 1, "due_only": False}, retry=FAST)
    for item in items:
        with pytest.raises(RuntimeError, match="worker killed"):
            rsu.sync_batch(item, ALL, retry=FAST)
    assert sandbox.rows(1) == before
    assert sandbox.scalar("SELECT json_agg(cursor_value ORDER BY scope) FROM paceline.watermarks") == cursors
    assert sandbox.scalar("SELECT count(*) FROM paceline.sync_audit WHERE status = 'failed'") == len(
        [e for i in items for e in i["events"]])
    monkeypatch.setattr(rsu.watermarks, "advance", advance)
    sandbox.run({"timing_partner_id": 1, "due_only": False})  # "clear": the same events again
    sandbox.assert_matches_truth(1, synced_events(first, 1))


KILLED_WORKER = """
import json, sys, time
from paceline import watermarks
from paceline.http.session import RetryPolicy
from paceline.registrations import runsignup_sync as rsu

def stall(*args, **kwargs):  # participants and removals are written, the transaction is open
    print("IN_TRANSACTION", flush=True)
    time.sleep(120)

watermarks.advance = stall
rsu.sync_batch(json.loads(sys.argv[1]), {"due_only": False}, retry=RetryPolicy(base_s=0.01))
"""


def test_worker_process_killed_mid_transaction_then_rerun(sandbox: Sandbox) -> None:
    first = sandbox.run({"timing_partner_id": 2})
    sandbox.control("mutate", {"action": "modify_participants", "login": sandbox.by_tp(2)["login"],
                               "future_only": True, "fraction": 0.2})
    sandbox.control("mutate", {"action": "remove_participants", "login": sandbox.by_tp(2)["login"],
                               "future_only": True, "n": 5})
    before = sandbox.rows(2)
    cursors = sandbox.scalar("SELECT json_agg(cursor_value ORDER BY scope) FROM paceline.watermarks")
    item = rsu.plan({"timing_partner_id": 2, "due_only": False}, retry=FAST)[0]
    worker = subprocess.Popen([sys.executable, "-c", KILLED_WORKER, json.dumps(item)], stdout=subprocess.PIPE,
                              text=True)
    try:
        lines = iter(worker.stdout.readline, "")  # logs go to stdout too: read up to the marker
        assert any(line.strip() == "IN_TRANSACTION" for line in lines), "the worker ended before writing"
    finally:
        worker.kill()  # SIGKILL: no cleanup, no rollback by the client; the server drops the transaction
        worker.wait(timeout=30)
    assert sandbox.rows(2) == before
    assert sandbox.scalar("SELECT json_agg(cursor_value ORDER BY scope) FROM paceline.watermarks") == cursors
    sandbox.run({"timing_partner_id": 2, "due_only": False})  # the retry / clear
    sandbox.assert_matches_truth(2, synced_events(first, 2))


def test_a_malformed_listing_entry_is_rejected_once_and_the_rest_is_planned(sandbox: Sandbox) -> None:
    clean = {(e["race_id"], e["event_id"]) for item in rsu.plan(ALL, retry=FAST) for e in item["events"]}
    sandbox.control("knobs", {"malformed_listing": True})  # a null race, a non-numeric race_id, a null event
    for _ in range(2):
        planned = {(e["race_id"], e["event_id"]) for item in rsu.plan(ALL, retry=FAST) for e in item["events"]}
        assert planned == clean  # every partner's good races still planned
    with psycopg.connect(sandbox.dsn) as conn:
        kept = conn.execute("SELECT reason, times_seen FROM paceline.rejected_records WHERE provider = 'runsignup' "
                            "ORDER BY reason").fetchall()
    # three entries per credential listing, each kept once however many plans saw it
    assert len(kept) == 3 * len(sandbox.integrations) and {n for _, n in kept} == {2}
    assert any("event: event is NoneType" in r for r, _ in kept) and any("race entry" in r for r, _ in kept)


def test_timing_partner_id_narrows_and_a_bad_one_writes_nothing(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match=r"timing_partner_id 99 .*valid timing_partner_id values: 1, 2"):
        rsu.plan({"timing_partner_id": 99}, retry=FAST)
    assert sandbox.scalar("SELECT count(*) FROM registrations.runsignup_events") == 0
    assert sandbox.scalar("SELECT count(*) FROM paceline.sync_audit") == 0
    summaries = sandbox.run({"timing_partner_id": 2})
    assert summaries and {s["timing_partner_id"] for s in summaries} == {2}
    assert sandbox.scalar("SELECT count(*) FROM registrations.runsignup_participants WHERE timing_partner_id = 1") == 0
    assert sandbox.scalar("SELECT count(DISTINCT timing_partner_id) FROM registrations.runsignup_events") == 1


def test_a_misconfigured_integration_fails_the_run_while_the_others_sync(sandbox: Sandbox, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "runsignup_sync")
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "manual__misconfigured")
    i = sandbox.by_tp(2)
    monkeypatch.setenv(f"AIRFLOW_CONN_{i['conn_id'].upper()}",
                       json.dumps({"conn_type": "http", "host": f"{sandbox.server.url}/Rest", "login": i["login"]}))
    summaries = sandbox.run()
    assert summaries and {s["timing_partner_id"] for s in summaries} == {1}  # tp1 still synced
    assert sandbox.scalar("SELECT count(*) FROM registrations.runsignup_events WHERE timing_partner_id = 2") == 0
    with pytest.raises(engine.RunFailed, match=rf"{i['integration_id']} plan: connection '{i['conn_id']}' .*lacks password"):
        rsu.summarize_run("manual__misconfigured")
    # every integration misconfigured: the plan fails at once, saying what to fix, having called nothing
    monkeypatch.delenv(f"AIRFLOW_CONN_{i['conn_id'].upper()}")
    one = sandbox.by_tp(1)
    monkeypatch.setenv(f"AIRFLOW_CONN_{one['conn_id'].upper()}", json.dumps({"conn_type": "http", "login": "x"}))
    sandbox.control("reset", {})
    with pytest.raises(engine.ConfigError, match=rf"connection '{i['conn_id']}' .*is not defined"):
        rsu.plan({}, retry=FAST)
    assert sandbox.control("stats")["total_calls"] == 0  # checked before any call


def test_future_only(sandbox: Sandbox) -> None:
    today = datetime.now(UTC).date()
    future = rsu.plan({}, retry=FAST)
    starts = [datetime.fromisoformat(e["start_time"]).date() for item in future for e in item["events"]]
    assert starts and min(starts) >= today
    everything = rsu.plan({"future_only": False, "due_only": False}, retry=FAST)
    names = {(e["race_name"], e["event_name"]) for item in everything for e in item["events"]}
    # past events, including one hidden from the race list by its race's upcoming event
    assert ("Frosty Five Miler", "5 Mile") in names and ("Spring Series", "Race 1") in names
    assert len(names) == len({(e["race_name"], e["event_name"]) for item in future for e in item["events"]}) + 2
    # the race details (one call per race) are read again only when a race's last_modified changes
    sandbox.control("reset", {})
    again = rsu.plan({"future_only": False, "due_only": False}, retry=FAST)
    assert {(e["race_name"], e["event_name"]) for item in again for e in item["events"]} == names
    endpoints = [endpoint for calls in sandbox.control("stats")["calls"].values() for endpoint in calls]
    assert "race" not in endpoints and "races" in endpoints


def test_proximity_tiers_pick_the_due_events(sandbox: Sandbox) -> None:
    now = datetime.now(UTC)
    sandbox.run()
    assert rsu.plan({}, now + timedelta(minutes=5), retry=FAST) == []
    in_15 = [e for item in rsu.plan({}, now + timedelta(minutes=15), retry=FAST) for e in item["events"]]
    assert {e["event_name"] for e in in_15} == {"Mile", "Kids Dash"}  # the events of tomorrow
    in_2h = {e["event_name"] for item in rsu.plan({}, now + timedelta(hours=2), retry=FAST) for e in item["events"]}
    assert {"Mile", "Half Marathon", "Lakeshore 5K"} <= in_2h and "25K Trail" not in in_2h
    custom = rsu.plan({"proximity_tiers": [[None, 10]]}, now + timedelta(minutes=15), retry=FAST)
    assert sum(len(i["events"]) for i in custom) == sum(len(i["events"]) for i in rsu.plan(ALL, retry=FAST))


def test_force_full_sync_and_incremental_days(sandbox: Sandbox) -> None:
    sandbox.run()
    forced = sandbox.run({"force_full_sync": True, "due_only": True})
    assert forced and {s["sync_type"] for s in forced} == {"full"}
    # age one event's last FULL sync: incrementals in between do not reset that clock (G2), so
    # it goes full under incremental_days=7 (and stays incremental under 30)
    with psycopg.connect(sandbox.dsn, autocommit=True) as conn:
        scope = conn.execute("SELECT scope FROM paceline.watermarks WHERE scope LIKE 'event:%' ORDER BY scope LIMIT 1"
                             ).fetchone()[0]
        conn.execute("UPDATE paceline.watermarks SET last_full_sync_at = now() - interval '10 days' WHERE scope = %s",
                     (scope,))
    lenient = sandbox.run({"due_only": False, "incremental_days": 30})
    assert {s["sync_type"] for s in lenient} == {"incremental"}  # and the incremental refreshed updated_at
    # a registration the provider no longer lists (and never reported removed) is stored as live
    _, race_id, event_id = scope.split(":")
    with psycopg.connect(sandbox.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO registrations.runsignup_participants (timing_partner_id, race_id, event_id, "
                     "registration_id, last_modified) SELECT timing_partner_id, race_id, event_id, 999999999, 1 "
                     "FROM registrations.runsignup_events WHERE race_id = %s AND event_id = %s", (race_id, event_id))
    strict = sandbox.run({"due_only": False, "incremental_days": 7})
    full = [s for s in strict if s["sync_type"] == "full"]
    assert [rsu.event_scope(s["race_id"], s["event_id"]) for s in full] == [scope]
    assert full[0]["removed"] == 1
    assert sandbox.scalar("SELECT removed_reason FROM registrations.runsignup_participants "
                          "WHERE registration_id = 999999999") == "not_listed"


def test_incremental_falls_back_to_full_on_a_fixable_error(sandbox: Sandbox, monkeypatch) -> None:
    first = sandbox.run({"timing_partner_id": 2})
    original = RunSignUpClient.participants_of_events

    def picky(self: RunSignUpClient, race_id: int, event_ids: list[int], *, modified_after: int | None = None,
              **kw: Any) -> dict:
        if modified_after is not None:  # as if the provider refused the timestamp: error 3
            raise PermanentApiError("RunSignUp error 3: Invalid parameters",
                                    body='{"error": {"error_code": 3, "error_msg": "Invalid parameters"}}')
        return original(self, race_id, event_ids, modified_after=modified_after, **kw)

    monkeypatch.setattr(RunSignUpClient, "participants_of_events", picky)
    again = sandbox.run({"timing_partner_id": 2, "due_only": False})
    assert {s["sync_type"] for s in again} == {"full"}
    sandbox.assert_matches_truth(2, synced_events(first, 2))


def test_credentials_never_appear_in_logs_or_errors(sandbox: Sandbox, caplog, monkeypatch) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = [v for i in sandbox.integrations for v in (i["login"], i["password"])]
    sandbox.control("knobs", {"error_rate": 0.2})
    sandbox.run({"timing_partner_id": 1})
    sandbox.control("knobs", {"error_rate": 0.0})
    sandbox.control("mutate", {"action": "revoke_credential", "login": sandbox.by_tp(1)["login"]})
    with pytest.raises(RuntimeError) as failure:
        rsu.plan({"timing_partner_id": 1}, retry=FAST)
    assert "Key authentication failed" in str(failure.value)
    event = {"integration": rsu.Integration(sandbox.by_tp(1)["integration_id"], "runsignup", 1, None,
                                            sandbox.by_tp(1)["conn_id"], None, None).to_dict(),
             "race_id": 1, "event_id": 2}
    with pytest.raises(PermanentApiError) as call_failure:
        rsu.sync_event(event, {}, retry=FAST)
    # a server that is not there: requests' own message (with the query string) must not leak either
    event["integration"]["conn_id"] = "rsu_closed_port"
    monkeypatch.setenv("AIRFLOW_CONN_RSU_CLOSED_PORT", json.dumps(
        {"conn_type": "runsignup", "host": "http://127.0.0.1:9/Rest", "login": secrets[0], "password": secrets[1]}))
    with pytest.raises(TransientApiError) as unreachable:
        rsu.sync_event(event, {}, retry=RetryPolicy(attempts=1, base_s=0.01))
    assert secrets[0] not in str(unreachable.value) and secrets[1] not in str(unreachable.value)
    audit_errors = sandbox.scalar("SELECT string_agg(coalesce(error, ''), ' ') FROM paceline.sync_audit")
    assert "api_key" not in caplog.text or "api_key=***" in caplog.text
    for secret in secrets:
        assert secret not in caplog.text
        assert secret not in str(failure.value) and secret not in str(call_failure.value)
        assert secret not in (audit_errors or "")


def test_summary_of_a_run_from_the_audit_table(sandbox: Sandbox, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "runsignup_sync")
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "manual__bench")
    summaries = sandbox.run({"timing_partner_id": 2})
    totals = rsu.summarize_run("manual__bench")
    assert totals["events"] == len(summaries) and totals["full"] == len(summaries) and not totals["failed"]
    assert totals["inserted"] == sum(s["inserted"] for s in summaries)
    assert totals["calls"] == sum(s["calls"] for s in summaries)
    assert rsu.summarize_run("another_run")["events"] == 0


def test_a_credential_shared_by_two_partners_is_listed_and_synced_once(sandbox: Sandbox) -> None:
    shared = sandbox.by_tp(2)
    with psycopg.connect(sandbox.dsn, autocommit=True) as conn:
        conn.execute(INSERT_PARTNER, (6, "Sister Timing"))
        conn.execute(INSERT_INTEGRATION, ("runsignup-tp6", "runsignup", 6, "Sister", shared["conn_id"], None))
    items = rsu.plan({"due_only": False}, retry=FAST)
    events = [e for item in items for e in item["events"] if e["integration"]["timing_partner_id"] in (2, 6)]
    assert events and {e["integration"]["timing_partner_id"] for e in events} == {2}  # planned once, for tp2
    assert {m["integration_id"] for e in events for m in e["mirrors"]} == {"runsignup-tp6"}
    listing_calls = sandbox.control("stats")["calls"][shared["login"]]["races"]
    sandbox.control("reset", {})
    for item in items:
        run_rescheduling(rsu.sync_batch, item, {"due_only": False}, retry=FAST)
    assert listing_calls == 1  # one listing for both partners
    assert sandbox.rows(6) == sandbox.rows(2) and sandbox.rows(2)  # the same rows, read once
    sandbox.assert_matches_truth(2, {e["event_id"] for e in events})
    assert sandbox.scalar("SELECT count(*) FROM registrations.runsignup_events WHERE timing_partner_id = 6") == len(events)


def test_a_plan_retried_after_a_listing_failure_clears_it(sandbox: Sandbox, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "runsignup_sync")
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "manual__retried")
    revoked = sandbox.by_tp(1)
    sandbox.control("mutate", {"action": "revoke_credential", "login": revoked["login"]})
    planned = rsu.plan({}, retry=FAST)  # tp1's listing fails; tp2 is planned
    assert planned and {e["integration"]["timing_partner_id"] for i in planned for e in i["events"]} == {2}
    with pytest.raises(engine.RunFailed, match=rf"{revoked['integration_id']} plan: listing races failed"):
        rsu.summarize_run("manual__retried")
    sandbox.control("mutate", {"action": "restore_credential", "login": revoked["login"]})
    rsu.plan({}, retry=FAST)  # the plan task's retry: this attempt's listing succeeds
    assert rsu.summarize_run("manual__retried")["failed"] == []
