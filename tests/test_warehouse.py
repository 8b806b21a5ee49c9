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
