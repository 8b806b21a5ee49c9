"""Migrations and the upsert helper against the embedded PostgreSQL."""

from __future__ import annotations

import threading

import psycopg
import pytest

from paceline.db import migrations
from paceline.db.warehouse import dsn_from_airflow, upsert

TABLE_DDL = """
CREATE TABLE IF NOT EXISTS public.upsert_probe (
    k1 int NOT NULL, k2 text NOT NULL, value text, payload jsonb, synced_at timestamptz DEFAULT now(),
    PRIMARY KEY (k1, k2))
"""


@pytest.fixture
def probe(warehouse_dsn: str) -> str:
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        conn.execute(TABLE_DDL)
        conn.execute("TRUNCATE public.upsert_probe")
    return warehouse_dsn


def test_migrations_reapply_is_a_no_op_and_recorded(warehouse_dsn: str) -> None:
    assert migrations.upgrade(warehouse_dsn) == []
    with psycopg.connect(warehouse_dsn) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM paceline.schema_migrations ORDER BY 1")]
    assert versions == [m.version for m in migrations.discover()]


def test_concurrent_upgrades_on_a_fresh_database_apply_each_migration_once(pg_server) -> None:
    dsn = pg_server.ensure_database("paceline_concurrent_upgrade")
    results: list[list[str]] = []
    threads = [threading.Thread(target=lambda: results.append(migrations.upgrade(dsn))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    applied = sorted(v for r in results for v in r)
    assert applied == sorted(m.version for m in migrations.discover())


def test_edited_migration_is_refused(pg_server, tmp_path) -> None:
    dsn = pg_server.ensure_database("paceline_edited_migration")
    (tmp_path / "0001_probe.sql").write_text("CREATE TABLE IF NOT EXISTS edited_probe (id int);")
    assert migrations.upgrade(dsn, tmp_path) == ["0001"]
    (tmp_path / "0001_probe.sql").write_text("CREATE TABLE IF NOT EXISTS edited_probe (id bigint);")
    with pytest.raises(RuntimeError, match="changed after it was applied"):
        migrations.upgrade(dsn, tmp_path)


def test_upsert_inserts_updates_and_leaves_identical_rows_alone(probe: str) -> None:
    rows = [{"k1": i, "k2": "a", "value": f"v{i}", "payload": {"i": i}} for i in range(1200)]
    with psycopg.connect(probe) as conn:
        first = upsert(conn, "public.upsert_probe", rows, key=["k1", "k2"], batch_size=500)
    assert (first.inserted, first.updated, first.unchanged) == (1200, 0, 0)
    with psycopg.connect(probe) as conn:
        again = upsert(conn, "public.upsert_probe", rows, key=["k1", "k2"])
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 1200)
    changed = [dict(r, value="changed") if r["k1"] < 10 else r for r in rows]
    with psycopg.connect(probe) as conn:
        third = upsert(conn, "public.upsert_probe", changed, key=["k1", "k2"])
        count, changed_count = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE value = 'changed') FROM public.upsert_probe"
        ).fetchone()
    assert (third.inserted, third.updated, third.unchanged) == (0, 10, 1190)
    assert (count, changed_count) == (1200, 10)


def test_duplicate_keys_in_one_call_collapse_to_the_last(probe: str) -> None:
    rows = [{"k1": 1, "k2": "x", "value": "old"}, {"k1": 1, "k2": "x", "value": "new"}]
    with psycopg.connect(probe) as conn:
        result = upsert(conn, "public.upsert_probe", rows, key=["k1", "k2"])
        assert conn.execute("SELECT value FROM public.upsert_probe").fetchall() == [("new",)]
    assert result.inserted == 1


def test_concurrent_upserts_of_the_same_keys_leave_one_row_each(probe: str) -> None:
    errors: list[BaseException] = []

    def writer(tag: str) -> None:
        try:
            for _ in range(5):
                rows = [{"k1": i, "k2": "c", "value": tag} for i in range(300)]
                with psycopg.connect(probe) as conn:
                    upsert(conn, "public.upsert_probe", rows, key=["k1", "k2"])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with psycopg.connect(probe) as conn:
        total, distinct = conn.execute("SELECT count(*), count(DISTINCT (k1, k2)) FROM public.upsert_probe").fetchone()
    assert total == distinct == 300


def test_dsn_from_airflow_connection_reaches_the_warehouse(warehouse_dsn: str) -> None:
    with psycopg.connect(dsn_from_airflow()) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("paceline_test",)


POSITIVE_QUOTAS = "0007"
INSERT_PARTNER = "INSERT INTO registrations.timing_partners VALUES (99, 'quota probe') ON CONFLICT DO NOTHING"
INSERT_INTEGRATION = """
INSERT INTO registrations.provider_integrations
    (integration_id, provider, timing_partner_id, conn_id, calls_per_hour, calls_per_second)
VALUES (%s, 'haku', 99, 'quota_probe', %s, %s)
"""
QUOTA_CONSTRAINTS = """
SELECT conname, convalidated FROM pg_constraint
WHERE conrelid = 'registrations.provider_integrations'::regclass AND conname LIKE '%%_positive' ORDER BY 1
"""


def _migration(version: str) -> migrations.Migration:
    return next(m for m in migrations.discover() if m.version == version)


@pytest.mark.parametrize(("per_hour", "per_second"), [(0, None), (-5, None), (500, 0), (500, -1.0)])
def test_a_quota_of_zero_or_below_is_refused(warehouse_dsn: str, per_hour: int, per_second: float | None) -> None:
    with psycopg.connect(warehouse_dsn) as conn:
        conn.execute(INSERT_PARTNER)
        with pytest.raises(psycopg.errors.CheckViolation, match="_positive"), conn.transaction():
            conn.execute(INSERT_INTEGRATION, ("quota-probe-bad", per_hour, per_second))
        for i, (ok_hour, ok_second) in enumerate([(None, None), (1, 0.5)]):
            conn.execute(INSERT_INTEGRATION, (f"quota-probe-ok-{i}", ok_hour, ok_second))
        conn.rollback()  # leave nothing behind


def test_positive_quota_migration_keeps_bad_rows_from_failing_the_upgrade_and_is_idempotent(pg_server, tmp_path) -> None:
    """An existing bad row must not fail the upgrade: the constraints go in NOT VALID, refuse new
    bad values at once, and are validated once the row is fixed. Applying the file twice is a no-op."""
    dsn = pg_server.ensure_database("paceline_positive_quotas")
    for m in migrations.discover():
        if m.version < POSITIVE_QUOTAS:
            (tmp_path / f"{m.version}_{m.name}.sql").write_text(m.sql)
    migrations.upgrade(dsn, tmp_path)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(INSERT_PARTNER)
        conn.execute(INSERT_INTEGRATION, ("quota-probe-negative", -5, None))  # before the migration
        conn.execute(_migration(POSITIVE_QUOTAS).sql)
        assert conn.execute(QUOTA_CONSTRAINTS).fetchall() == [
            ("provider_integrations_calls_per_hour_positive", False),  # the bad row keeps it unvalidated
            ("provider_integrations_calls_per_second_positive", True),
        ]
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(INSERT_INTEGRATION, ("quota-probe-zero", 0, None))
        conn.execute("UPDATE registrations.provider_integrations SET calls_per_hour = NULL WHERE calls_per_hour < 0")
        conn.execute(_migration(POSITIVE_QUOTAS).sql)  # again: adds nothing, validates what it now can
        assert conn.execute(QUOTA_CONSTRAINTS).fetchall() == [
            ("provider_integrations_calls_per_hour_positive", True),
            ("provider_integrations_calls_per_second_positive", True),
        ]


def test_hourly_quota_refuses_zero_or_below() -> None:
    from paceline.http.limiter import hourly_quota

    for per_hour, per_second in [(0, None), (-5, None), (500, -1.0)]:
        with pytest.raises(ValueError, match="calls_per_hour must be above 0"):
            hourly_quota(per_hour, per_second)
    assert len(hourly_quota(500, 0)) == 1  # 0 per second: no per-second cap, as before
