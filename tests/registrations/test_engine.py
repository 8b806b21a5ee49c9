"""The registration engine's own rules, on the embedded warehouse (no provider involved)."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest

from paceline import audit
from paceline.db import warehouse as wh
from paceline.registrations import engine
from paceline.registrations.engine import ConfigError, ParamError, SyncParams
from paceline.registrations.planning import DEFAULT_TIERS, Integration

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def test_params_are_parsed_strictly_and_alike_for_every_provider() -> None:
    p = SyncParams.from_params({"force_full_sync": "false", "future_only": "False", "due_only": "0",
                                "incremental_days": "3", "timing_partner_id": "", "per_page": None})
    assert (p.force_full_sync, p.future_only, p.due_only, p.incremental_days, p.timing_partner_id, p.per_page) == (
        False, False, False, 3, None, None)
    assert SyncParams.from_params({"force_full_sync": "true", "timing_partner_id": 4}).timing_partner_id == 4
    for bad, message in (({"future_only": "sometimes"}, "future_only must be true or false"),
                         ({"incremental_days": -1}, "incremental_days must be 0 or more"),
                         ({"incremental_days": "seven"}, "incremental_days must be a whole number"),
                         ({"timing_partner_id": True}, "timing_partner_id must be a whole number"),
                         ({"proximity_tiers": [[2, 0]]}, "every_minutes must be a positive number")):
        with pytest.raises(ParamError, match=message):
            SyncParams.from_params(bad)


def test_one_full_sync_rule_counted_from_the_last_full_sync() -> None:
    p = SyncParams.from_params({"incremental_days": 7})
    assert engine.decide(False, None, p, NOW).full  # new event
    assert engine.decide(True, None, p, NOW).full  # a cursor but never a full read
    assert not engine.decide(True, NOW - timedelta(days=6), p, NOW).full
    late = engine.decide(True, NOW - timedelta(days=8), p, NOW)
    assert late.full and "last full sync 8 days ago" in late.reason
    assert engine.decide(True, NOW, SyncParams.from_params({"force_full_sync": True}), NOW).full


def test_an_event_without_a_date_is_due_daily_not_every_run() -> None:
    assert engine.is_due_event(None, None, NOW, DEFAULT_TIERS)  # never synced
    assert not engine.is_due_event(None, NOW - timedelta(minutes=15), NOW, DEFAULT_TIERS)
    assert engine.is_due_event(None, NOW - timedelta(days=1), NOW, DEFAULT_TIERS)
    assert engine.is_due_event(date(2026, 12, 8), NOW - timedelta(minutes=15), NOW, DEFAULT_TIERS)  # tomorrow


def test_a_quota_override_of_zero_or_less_is_refused() -> None:
    for value in (0, -5):
        with pytest.raises(ConfigError, match="calls_per_hour is .* set a positive number"):
            engine.check_quota(Integration("x", "haku", 1, None, "c", value, None))
    engine.check_quota(Integration("x", "haku", 1, None, "c", None, None))


def _audit(unit: str, status: str, run_id: str = "r1", error: str | None = None) -> None:
    """An audit row as a haku_sync task of run `run_id` writes it."""
    with wh.unit_of_work() as conn:
        record = audit.AuditRecord("haku", unit, "incremental", "haku-tp1", 1, status=status, error=error)
        conn.execute(audit.INSERT_AUDIT, {**record.__dict__, "dag_id": "haku_sync", "run_id": run_id, "task_id": "sync",
                                          "map_index": 0, "try_number": 1})


def test_the_run_summary_names_every_failure_and_sees_tasks_that_left_no_audit_row(warehouse) -> None:
    _audit("e1", "success")
    _audit("e2", "failed", error="HTTP 500")
    _audit("e2", "success")  # a retry succeeded: the latest attempt counts
    _audit("e3", "partial")
    summary = engine.summarize_run("haku", "haku_sync", "r1", {"plan": "success", "sync_0": "success"})
    assert (summary["events"], summary["incremental"], summary["partial"], summary["failed"]) == (3, 2, 1, [])
    # a task killed mid-event leaves no audit row of its own: its state names it
    with pytest.raises(engine.RunFailed, match=r"task sync_1 failed"):
        engine.summarize_run("haku", "haku_sync", "r1", {"plan": "success", "sync_0": "success", "sync_1": "failed"})
    # a plan that raised: the sync tasks never ran
    with pytest.raises(engine.RunFailed, match=r"task plan failed; task sync failed") as failed:
        engine.summarize_run("haku", "haku_sync", "r2", {"plan": "failed", "sync": "upstream_failed", "summary": None})
    assert "summary" not in str(failed.value)
    _audit("e9", "failed", run_id="r3", error="PermanentApiError: HTTP 403")
    with pytest.raises(engine.RunFailed, match=r"haku-tp1 e9: PermanentApiError: HTTP 403"):
        engine.summarize_run("haku", "haku_sync", "r3", {})


def test_misconfiguration_fails_fast_as_a_non_retryable_task_failure() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="timing_partner_id"):
        with engine.fail_fast():
            raise ParamError("timing_partner_id 99 names no enabled haku integration")
    with pytest.raises(RuntimeError, match="outage"):  # anything else keeps Airflow's retries
        with engine.fail_fast():
            raise RuntimeError("outage")


def test_one_writer_per_event_across_processes(warehouse) -> None:
    order: list[str] = []
    first_in = threading.Event()
    release = threading.Event()

    def first() -> None:
        with engine.event_writer("haku", 1, "ev-b", "ev-a", dsn=warehouse):
            order.append("first in")
            first_in.set()
            release.wait(60)
            order.append("first out")

    def second() -> None:
        with engine.event_writer("haku", 1, "ev-a", dsn=warehouse):
            order.append("second in")

    a = threading.Thread(target=first)
    a.start()
    assert first_in.wait(60)
    b = threading.Thread(target=second)
    b.start()
    with psycopg.connect(warehouse, autocommit=True) as conn:
        for _ in range(600):  # until the second writer waits on the lock (counted, not timed)
            if conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").fetchone()[0]:
                break
            b.join(0.05)
    assert order == ["first in"]
    release.set()
    a.join(60)
    b.join(60)
    assert order == ["first in", "first out", "second in"]


def test_an_older_record_never_replaces_a_newer_one(warehouse) -> None:
    table = "registrations.haku_participants"
    key = ["event_id", "participant_id", "timing_partner_id"]
    newer = {"event_id": "ev", "participant_id": "R-1", "timing_partner_id": 1, "email": "new@x",
             "updated_at": NOW, "is_cancelled": False}
    older = {**newer, "email": "old@x", "updated_at": NOW - timedelta(hours=1)}
    with warehouse_conn(warehouse) as conn:
        conn.execute("DELETE FROM registrations.haku_participants WHERE event_id = 'ev'")
        assert engine_upsert(conn, table, [newer], key).inserted == 1
        assert engine_upsert(conn, table, [older], key).unchanged == 1  # a slow writer's stale copy
        assert conn.execute("SELECT email FROM registrations.haku_participants WHERE event_id = 'ev'").fetchone()[0] == "new@x"
        assert engine_upsert(conn, table, [{**newer, "email": "newest@x", "updated_at": NOW + timedelta(1)}], key).updated == 1


def warehouse_conn(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True)


def engine_upsert(conn: psycopg.Connection, table: str, rows: list[dict], key: list[str]) -> wh.UpsertResult:
    return wh.upsert(conn, table, rows, key, not_older_by="updated_at")


def test_a_rejected_record_is_kept_once_and_counted(warehouse) -> None:
    with warehouse_conn(warehouse) as conn:
        for _ in range(3):
            audit.reject(conn, provider="haku", reason="no id", raw={"a": 1}, integration_id="i", unit="ev")
        audit.reject(conn, provider="haku", reason="no id", raw={"a": 2}, integration_id="i", unit="ev")
        rows = conn.execute("SELECT raw, times_seen FROM paceline.rejected_records ORDER BY raw").fetchall()
    assert rows == [('{"a": 1}', 3), ('{"a": 2}', 1)]
