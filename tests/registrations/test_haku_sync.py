"""haku_sync against the Haku stand-in and the embedded warehouse: plan and sync_event called directly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from paceline.http.session import PermanentApiError
from paceline.providers.haku.client import HakuClient
from paceline.providers.haku.hook import HakuHook, TokenStore
from paceline.registrations import engine, haku_sync
from tests.registrations.haku_support import HakuWorld, audit_rows, haku_fixture  # noqa: F401 - fixture

SMALL = "Pacific Coast 10K"  # partner 3, 60 registrations: three capped pages
TINY = "Harbor Lights 5K"  # partner 3, 5 registrations


def sync_partner3(params: dict | None = None, haku: HakuWorld | None = None) -> list[dict]:
    return [haku_sync.sync_event(haku.item(3, name), params or {}) for name in (SMALL, TINY)]


def test_full_then_identical_rerun_spends_only_listing_calls(haku: HakuWorld) -> None:
    item = haku.item(3, SMALL)
    first = haku_sync.sync_event(item, {})
    assert first["sync_type"] == "full" and first["inserted"] == 60 and first["details"] == 60
    haku.assert_matches_truth(3, {item["event_id"]})
    haku.reset_stats()
    second = haku_sync.sync_event(item, {})
    assert second["sync_type"] == "incremental"
    assert (second["inserted"], second["updated"], second["details"]) == (0, 0, 0)
    assert haku.calls(3, "registration") == 0
    assert haku.calls(3, "participants") >= 1
    rows = audit_rows(haku.dsn, item["event_id"])
    assert [r["sync_type"] for r in rows] == ["full", "incremental"]
    assert rows[0]["calls"] == 4 + 60  # 3 pages + the empty one, 60 details
    assert rows[1]["calls"] == haku.calls(3, "participants") and rows[1]["rows_inserted"] == 0


def test_incremental_after_changes_equals_ground_truth(haku: HakuWorld) -> None:
    sync_partner3(haku=haku)
    sync_turkey = haku_sync.sync_event(haku.item(2, "Lakeshore Turkey Trot"), {})
    assert sync_turkey["inserted"] == 35
    small = haku.event(SMALL)["event_id"]
    haku.mutate("modify_participants", event_id=small, n=4)
    haku.mutate("add_participants", event_id=small, n=3)
    haku.mutate("remove_participants", event_id=small, n=2)
    haku.mutate("modify_participants", event_id=haku.event(TINY)["event_id"], n=1)
    haku.reset_stats()
    results = {r["event_id"]: r for r in sync_partner3(haku=haku)}
    assert {r["sync_type"] for r in results.values()} == {"incremental"}
    assert results[small]["inserted"] == 3 and results[small]["cancelled"] == 2
    assert results[small]["details"] <= 9  # only new or changed registrations
    assert haku.calls(3, "registration") <= 10
    assert haku.assert_matches_truth(3) == 63 + 5
    haku.assert_matches_truth(2, {haku.event("Lakeshore Turkey Trot")["event_id"]})


def test_silently_capped_pages_lose_nothing(haku: HakuWorld) -> None:
    item = haku.item(3, SMALL)
    result = haku_sync.sync_event(item, {"per_page": 100})  # the server answers 25 per page
    assert result["listed"] == 60 and result["inserted"] == 60
    assert haku.calls(3, "participants") == 4  # pages 1-3 and the empty page 4
    haku.assert_matches_truth(3, {item["event_id"]})


def test_token_expiring_mid_run_is_refreshed_once(haku: HakuWorld) -> None:
    sync_partner3(haku=haku)  # token fetched and cached
    haku.mutate("modify_participants", event_id=haku.event(SMALL)["event_id"], n=5)
    haku.mutate("expire_tokens", client_id=haku.integration(3)["login"])  # the cached token is now dead
    sync_partner3(haku=haku)
    stats = haku.stats()
    assert stats["unauthorized"] >= 1
    assert stats["tokens_issued"][haku.integration(3)["login"]] == 2
    haku.assert_matches_truth(3)


def test_short_lived_tokens_over_a_long_run(haku: HakuWorld) -> None:
    haku.knobs(token_uses=10)  # each token answers 10 calls, then 401: expiry by count, not by the clock
    sync_partner3(haku=haku)  # ~70 calls: several tokens
    stats = haku.stats()
    issued = stats["tokens_issued"][haku.integration(3)["login"]]
    assert issued >= 6 and stats["unauthorized"] == issued - 1  # each dead token refreshed once
    haku.assert_matches_truth(3)


def test_429_storm_is_waited_out(haku: HakuWorld) -> None:
    haku.knobs(throttle_next=8)  # more throttles in a row than retry attempts: throttles spend no retry
    sync_partner3(haku=haku)
    stats = haku.stats()
    assert sum(stats["throttles"].values()) == 8 and stats["knobs"]["throttle_next"] == 0
    haku.assert_matches_truth(3)


def test_quota_shared_with_the_server_is_never_exceeded(haku: HakuWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    # 40 calls per 1-second "hour" on both sides: the limiter waits, the server never throttles
    haku.knobs(per_hour=40)
    with psycopg.connect(haku.dsn, autocommit=True) as conn:
        conn.execute("UPDATE registrations.provider_integrations SET calls_per_hour = 40 WHERE timing_partner_id = 3")
    item = haku.item(3, SMALL)
    item["integration"]["calls_per_hour"] = 40
    started = time.monotonic()
    haku_sync.sync_event(item, {})
    assert time.monotonic() - started >= 0.9  # 64 calls at 40 per second
    assert haku.stats()["throttles"] == {}
    haku.assert_matches_truth(3, {item["event_id"]})


def test_random_5xx_are_retried(haku: HakuWorld) -> None:
    haku.knobs(error_rate=0.1)
    sync_partner3(haku=haku)
    assert haku.stats()["errors_injected"] > 0
    haku.assert_matches_truth(3)


def test_malformed_records_are_rejected_and_reread_later(haku: HakuWorld) -> None:
    haku.knobs(malformed_rate=0.08)
    results = sync_partner3(haku=haku)
    rejected = sum(r["rejected"] for r in results)
    assert rejected > 0
    with psycopg.connect(haku.dsn) as conn:
        kept = conn.execute("SELECT count(*), min(reason) FROM paceline.rejected_records WHERE provider = 'haku'").fetchone()
    assert kept[0] == rejected and kept[1]
    assert len(haku.stored(3)) >= 65 - rejected  # the rest of each event committed
    haku.knobs(malformed_rate=0.0)
    sync_partner3(haku=haku)  # the held cursor makes the rejected ones come back
    haku.assert_matches_truth(3)


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no except Exception catches it."""


def test_sync_killed_mid_event_leaves_it_as_before_then_recovers(haku: HakuWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    item = haku.item(3, SMALL)
    haku_sync.sync_event(item, {})
    before = haku.stored(3)
    haku.mutate("modify_participants", event_id=item["event_id"], n=6)
    haku.mutate("add_participants", event_id=item["event_id"], n=2)
    real = HakuClient.registration
    calls = {"n": 0}

    def dying(self, event_id, number):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] > 4:
            raise Killed
        return real(self, event_id, number)

    monkeypatch.setattr(HakuClient, "registration", dying)
    with pytest.raises(Killed):
        haku_sync.sync_event(item, {})
    assert haku.stored(3) == before  # nothing of the killed attempt is visible
    monkeypatch.setattr(HakuClient, "registration", real)
    again = haku_sync.sync_event(item, {})  # what clearing the task does
    assert again["sync_type"] == "incremental" and again["inserted"] == 2
    haku.assert_matches_truth(3, {item["event_id"]})


KILLABLE = """
import json, sys
from paceline.registrations import haku_sync
print("started", flush=True)
haku_sync.sync_event(json.loads(sys.argv[1]), {})
print("finished", flush=True)
"""


def test_sync_process_killed_with_sigkill_then_rerun(haku: HakuWorld) -> None:
    item = haku.item(3, SMALL)
    haku_sync.sync_event(item, {})
    before = haku.stored(3)
    haku.mutate("modify_participants", event_id=item["event_id"], n=20)
    haku.knobs(hold_after=10)  # 10 calls answered, then the process hangs on the 11th of 20+: killed mid-event
    haku.reset_stats()
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, json.dumps(item)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 300  # ends as soon as a call is held
    while haku.stats()["held"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert haku.calls(3, "registration") >= 5
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert haku.stored(3) == before  # as before: no half event
    haku.knobs(hold_after=None)
    again = haku_sync.sync_event(item, {})
    assert again["updated"] == 20
    haku.assert_matches_truth(3, {item["event_id"]})


def test_force_full_sync_and_incremental_days(haku: HakuWorld) -> None:
    item = haku.item(3, TINY)
    haku_sync.sync_event(item, {})
    haku.reset_stats()
    lapsed = haku_sync.sync_event(item, {"incremental_days": 0})
    assert lapsed["sync_type"] == "full" and lapsed["details"] == 0  # whole listing, nothing changed
    forced = haku_sync.sync_event(item, {"force_full_sync": True})
    assert forced["sync_type"] == "full" and forced["details"] == 5  # every detail read again
    assert (forced["inserted"], forced["updated"]) == (0, 0)


def test_failed_incremental_falls_back_to_full(haku: HakuWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    item = haku.item(3, TINY)
    haku_sync.sync_event(item, {})
    haku.mutate("modify_participants", event_id=item["event_id"], n=2)
    real = HakuClient.participant_pages
    attempts = []

    def refusing_once(self, event_id, per_page=None, start_page=1):  # noqa: ANN001, ANN202
        attempts.append(event_id)
        if len(attempts) == 1:
            raise PermanentApiError("sort_column not supported", status=400)
        return real(self, event_id, per_page, start_page)

    monkeypatch.setattr(HakuClient, "participant_pages", refusing_once)
    result = haku_sync.sync_event(item, {})
    assert result["sync_type"] == "full" and result["reason"].startswith("fallback") and result["updated"] == 2
    haku.assert_matches_truth(3, {item["event_id"]})
    with psycopg.connect(haku.dsn, autocommit=True) as conn:
        conn.execute("UPDATE paceline.watermarks SET cursor_value = 'garbage'")
    monkeypatch.setattr(HakuClient, "participant_pages", real)
    assert haku_sync.sync_event(item, {})["reason"].startswith("unreadable cursor")


def test_token_is_shared_between_hooks_and_stored_encrypted(haku: HakuWorld) -> None:
    conn_id = haku.integration(3)["conn_id"]
    first = HakuHook(conn_id).access_token()
    TokenStore.forget_memory()  # as if another worker process
    second = HakuHook(conn_id).access_token()
    assert first == second
    assert haku.stats()["tokens_issued"] == {haku.integration(3)["login"]: 1}
    with psycopg.connect(haku.dsn) as conn:
        stored = conn.execute("SELECT credential_hash, token_encrypted FROM paceline.api_tokens").fetchall()
    assert len(stored) == 1 and first not in json.dumps(stored) and haku.integration(3)["login"] not in stored[0][0]


def test_hook_test_connection_and_haku_conn_type(haku: HakuWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    integ = haku.integration(3)
    monkeypatch.setenv(
        "AIRFLOW_CONN_HAKU_UI",
        json.dumps({"conn_type": "haku", "host": haku.server.url, "login": integ["login"], "password": integ["password"], "extra": integ["extra"]}),
    )
    ok, message = HakuHook("haku_ui").test_connection()
    assert ok, message
    monkeypatch.setenv(
        "AIRFLOW_CONN_HAKU_BAD",
        json.dumps({"conn_type": "haku", "host": haku.server.url, "login": integ["login"], "password": "wrong", "extra": integ["extra"]}),
    )
    ok, message = HakuHook("haku_bad").test_connection()
    assert not ok and "invalid_client" in message and "wrong" not in message


def test_plan_selects_due_future_events_and_upserts_them(haku: HakuWorld) -> None:
    batches = haku_sync.plan({"timing_partner_id": 3})
    items = [i for b in batches for i in b]
    assert {i["event_name"] for i in items} == {SMALL, TINY}
    assert items[0]["event_name"] == TINY  # nearest first
    assert "tp3" in haku_sync.batch_label(batches[0])
    with psycopg.connect(haku.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM registrations.haku_events WHERE timing_partner_id = 3").fetchone()[0] == 2
    for item in items:
        haku_sync.sync_event(item, {})
    assert haku_sync.plan({"timing_partner_id": 3}) == []  # just synced: not due
    assert len([i for b in haku_sync.plan({"timing_partner_id": 3, "due_only": False}) for i in b]) == 2
    past = [i["event_name"] for b in haku_sync.plan({"timing_partner_id": 2, "future_only": False}) for i in b]
    assert "Lakeshore Turkey Trot" in past
    future = [i["event_name"] for b in haku_sync.plan({"timing_partner_id": 2}) for i in b]
    assert "Lakeshore Turkey Trot" not in future and "Lakeshore Marathon Weekend" in future


def test_plan_refuses_unknown_partner_and_skips_a_broken_connection(haku: HakuWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "haku_sync")
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "manual__broken")
    with pytest.raises(engine.ParamError, match="valid timing_partner_id values: 2, 3"):
        haku_sync.plan({"timing_partner_id": 99})
    with pytest.raises(engine.ParamError, match="force_full_sync must be true or false"):
        haku_sync.plan({"force_full_sync": "maybe"})
    assert not engine.SyncParams.from_params({"force_full_sync": "false", "future_only": "false"}).future_only
    monkeypatch.delenv(f"AIRFLOW_CONN_{haku.integration(2)['conn_id'].upper()}")
    items = [i for b in haku_sync.plan({}) for i in b]  # tp3 is still planned
    assert items and {i["integration"]["timing_partner_id"] for i in items} == {3}
    with psycopg.connect(haku.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM registrations.haku_events WHERE timing_partner_id = 2").fetchone()[0] == 0
    with pytest.raises(engine.RunFailed, match=r"haku-tp2 plan: connection 'haku_tp2' .*is not defined"):
        haku_sync.summarize("haku_sync", "manual__broken")
    monkeypatch.delenv(f"AIRFLOW_CONN_{haku.integration(3)['conn_id'].upper()}")
    with pytest.raises(engine.ConfigError, match="every selected integration is misconfigured"):
        haku_sync.plan({})


def test_a_killed_full_sync_resumes_from_its_last_committed_page(haku: HakuWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    item = haku.item(3, SMALL)  # 60 registrations, 25 per page: pages of 25, 25, 10
    real = HakuClient.registration
    calls = {"n": 0}

    def dying(self, event_id, number):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] == 30:  # page 1 (25 details) committed, page 2 half read
            raise Killed
        return real(self, event_id, number)

    monkeypatch.setattr(HakuClient, "registration", dying)
    with pytest.raises(Killed):
        haku_sync.sync_event(item, {})
    assert len(haku.stored(3)) == 25  # page 1 kept: the kill lost one page at most
    monkeypatch.setattr(HakuClient, "registration", real)
    haku.reset_stats()
    again = haku_sync.sync_event(item, {})  # what clearing the task does
    assert again["reason"].startswith("resuming at page 2") and again["status"] == "success"
    assert haku.calls(3, "registration") == 35  # pages 2 and 3 only: page 1's details are not asked again
    haku.assert_matches_truth(3, {item["event_id"]})
    assert haku_sync.sync_event(item, {})["sync_type"] == "incremental"  # the cursor was set at the end


def test_a_detail_that_keeps_failing_is_rejected_and_the_event_completes(haku: HakuWorld) -> None:
    item = haku.item(3, TINY)
    haku_sync.sync_event(item, {})
    number = sorted(p for _, p in haku.stored(3) if _ == item["event_id"])[0]
    haku.mutate("modify_participants", event_id=item["event_id"], n=5)
    haku.knobs(fail_registration=number)  # this detail answers 500 whatever the retries
    result = haku_sync.sync_event(item, {})
    assert result["status"] == "success" and result["rejected"] == 1 and result["updated"] == 4
    haku.knobs(fail_registration=None)
    again = haku_sync.sync_event(item, {})  # the held cursor asks for it again
    assert again["updated"] == 1
    haku.assert_matches_truth(3, {item["event_id"]})
    with psycopg.connect(haku.dsn) as conn:
        kept = conn.execute("SELECT count(*), max(times_seen) FROM paceline.rejected_records WHERE record_key = %s",
                            (number,)).fetchone()
    assert kept == (1, 1)


def test_a_budgeted_sync_continues_in_the_next_runs(haku: HakuWorld) -> None:
    item = haku.item(3, SMALL)
    first = haku_sync.sync_event(item, {}, call_budget=20)  # a page costs 26 calls: one page per sync
    assert first["status"] == "partial" and first["inserted"] == 25
    assert audit_rows(haku.dsn, item["event_id"])[-1]["status"] == "partial"
    planned = [i["event_id"] for b in haku_sync.plan({"timing_partner_id": 3}) for i in b]
    assert item["event_id"] in planned  # an event part-way is always due
    second = haku_sync.sync_event(item, {}, call_budget=20)
    third = haku_sync.sync_event(item, {}, call_budget=20)
    assert (second["status"], second["inserted"]) == ("partial", 25)
    assert (third["status"], third["inserted"]) == ("success", 10)
    haku.assert_matches_truth(3, {item["event_id"]})


def test_two_writers_of_one_event_take_turns(haku: HakuWorld) -> None:
    """The scheduled sync and a backfill (or two overlapping runs) never interleave on one event."""
    import threading

    item = haku.item(3, TINY)
    lock_name = engine.event_lock_name("haku", 3, item["event_id"])
    with psycopg.connect(haku.dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (lock_name,))
        done: list[dict] = []
        writer = threading.Thread(target=lambda: done.append(haku_sync.sync_event(item, {})))
        writer.start()
        waiting = 0
        for _ in range(600):  # until the writer waits on the lock (counted, not timed)
            waiting = holder.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").fetchone()[0]
            if waiting:
                break
            writer.join(0.05)
        assert waiting == 1 and not done and haku.calls(3, "participants") == 0  # it waits before any call
        holder.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (lock_name,))
    writer.join(60)
    assert done and done[0]["status"] == "success"
    haku.assert_matches_truth(3, {item["event_id"]})


def test_models_parse_defensively() -> None:
    from paceline.providers.haku.models import ParseError, parse_datetime, parse_registration, parse_summary

    assert parse_datetime("2026-01-03 09:00:00") == parse_datetime("2026-01-03T09:00:00Z") == parse_datetime("2026-01-03T04:00:00-05:00")
    assert parse_datetime(None) is None and parse_datetime("") is None
    for bad in ({"updated_at": "2026-01-01T00:00:00Z"}, {"registration_number": "R-1", "updated_at": "abc"},
                {"registration_number": "R-1", "is_cancelled": "no"}, ["not", "a", "dict"]):
        with pytest.raises(ParseError):
            parse_summary(bad)
    summary = parse_summary({"registration_number": 123, "updated_at": "2026-01-03T09:00:00Z"})
    assert summary.registration_number == "123" and summary.is_cancelled is False
    detail = parse_registration(
        {"registration_number": "R-1", "updated_at": "2026-01-03T09:00:00Z", "cancelled_at": "2026-01-03T09:00:00Z",
         "participant": {"first_name": " Zoë ", "last_name": "Muñoz", "email": None}}
    )
    assert detail.is_cancelled and detail.first_name == "Zoë" and detail.email is None
    with pytest.raises(ParseError):
        parse_registration({"registration_number": "R-1", "updated_at": "2026-01-03T09:00:00Z", "participant": "x"})


def test_a_credential_shared_by_two_partners_is_listed_and_synced_once(haku: HakuWorld) -> None:
    shared = haku.integration(3)
    with psycopg.connect(haku.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO registrations.timing_partners VALUES (5, 'Sister Timing') ON CONFLICT DO NOTHING")
        conn.execute("INSERT INTO registrations.provider_integrations (integration_id, provider, timing_partner_id, "
                     "organization, conn_id) VALUES ('haku-tp5', 'haku', 5, 'Sister', %s)", (shared["conn_id"],))
    items = [i for b in haku_sync.plan({"due_only": False}) for i in b]
    partners_3_and_5 = [i for i in items if i["integration"]["timing_partner_id"] in (3, 5)]
    assert {i["integration"]["timing_partner_id"] for i in partners_3_and_5} == {3}  # planned once, for tp3
    assert {m["integration_id"] for i in partners_3_and_5 for m in i["mirrors"]} == {"haku-tp5"}
    assert haku.calls(3, "events") == 2  # one listing for both partners: its page and the empty page that ends it
    haku.reset_stats()
    for item in partners_3_and_5:
        haku_sync.sync_event(item, {})
    assert haku.calls(3, "registration") == 65  # one detail per registration, not two
    with psycopg.connect(haku.dsn) as conn:
        copies = conn.execute(
            "SELECT count(*) FILTER (WHERE timing_partner_id = 3), count(*) FILTER (WHERE timing_partner_id = 5) "
            "FROM registrations.haku_participants").fetchone()
        events = conn.execute("SELECT count(*) FROM registrations.haku_events WHERE timing_partner_id = 5").fetchone()[0]
    assert copies == (65, 65) and events == 2
    haku.assert_matches_truth(3)
