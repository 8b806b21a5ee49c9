"""The warehouse: connections from the Airflow connection, and the one upsert every loader uses."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from paceline.config import WAREHOUSE_CONN_ID


def dsn_from_airflow(conn_id: str = WAREHOUSE_CONN_ID) -> str:
    """Build a libpq DSN from an Airflow connection (any secrets backend, AIRFLOW_CONN_* included)."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    params: dict[str, Any] = {
        "host": conn.host or "127.0.0.1",
        "port": conn.port or 5432,
        "user": conn.login or "postgres",
        "dbname": conn.schema or "postgres",
    }
    if conn.password:
        params["password"] = conn.password
    for key in ("sslmode", "sslrootcert", "connect_timeout", "application_name"):
        value = (conn.extra_dejson or {}).get(key)
        if value is not None:
            params[key] = value
    return psycopg.conninfo.make_conninfo(**params)


def connect(dsn: str | None = None, conn_id: str = WAREHOUSE_CONN_ID, **kwargs: Any) -> psycopg.Connection:
    """Open a warehouse connection from a DSN or, by default, from the Airflow connection."""
    return psycopg.connect(dsn or dsn_from_airflow(conn_id), **kwargs)


@contextmanager
def unit_of_work(dsn: str | None = None, conn_id: str = WAREHOUSE_CONN_ID) -> Iterator[psycopg.Connection]:
    """One transaction for one unit of work (an event, a day): all of it commits, or none of it."""
    with connect(dsn, conn_id) as conn, conn.transaction():
        yield conn


@dataclass
class UpsertResult:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    def __iadd__(self, other: UpsertResult) -> UpsertResult:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        return self


def _adapt(value: Any) -> Any:
    if isinstance(value, dict | list):
        return Jsonb(value)
    return value


def upsert(
    conn: psycopg.Connection,
    table: str,
    rows: Iterable[Mapping[str, Any]],
    key: Sequence[str],
    *,
    compare_exclude: Sequence[str] = ("synced_at",),
    batch_size: int = 500,
    not_older_by: str | None = None,
) -> UpsertResult:
    """Insert rows, or update them on conflict of `key`, in batches; unchanged rows are not rewritten.

    `table` is "schema.table". Rows with the same key inside one call collapse to the last one
    (PostgreSQL refuses to update one row twice in a statement). A row whose compared columns
    equal the stored ones is left alone, so an identical re-run writes nothing; columns in
    `compare_exclude` (e.g. synced_at) are written only along with a real change. With
    `not_older_by` (a change stamp such as updated_at), a row never replaces a stored one whose
    stamp is newer: a slow writer holding older data cannot undo a newer one.
    """
    deduped: dict[tuple[Any, ...], Mapping[str, Any]] = {}
    for row in rows:
        deduped[tuple(row[k] for k in key)] = row
    if not deduped:
        return UpsertResult()
    columns = list(next(iter(deduped.values())).keys())
    schema, _, name = table.rpartition(".")
    target = sql.Identifier(schema, name) if schema else sql.Identifier(name)
    non_key = [c for c in columns if c not in key]
    compared = [c for c in non_key if c not in compare_exclude]
    if non_key:
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in non_key
        )
        action = sql.SQL("DO UPDATE SET {}").format(assignments)
        if compared:
            action += sql.SQL(" WHERE ({}) IS DISTINCT FROM ({})").format(
                sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in compared),
                sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in compared),
            )
        if not_older_by is not None:
            action += sql.SQL(" {} (t.{stamp} IS NULL OR EXCLUDED.{stamp} IS NULL OR EXCLUDED.{stamp} >= t.{stamp})").format(
                sql.SQL("AND") if compared else sql.SQL("WHERE"), stamp=sql.Identifier(not_older_by)
            )
    else:
        action = sql.SQL("DO NOTHING")
    statement = sql.SQL("INSERT INTO {} AS t ({}) VALUES ({}) ON CONFLICT ({}) {} RETURNING (xmax = 0)").format(
        target,
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        sql.SQL(", ").join(map(sql.Identifier, key)),
        action,
    )
    result = UpsertResult()
    values = list(deduped.values())
    # One short statement, sent many times in pipeline mode: psycopg prepares it once, and no
    # giant multi-row SQL text has to be built and parsed per batch.
    with conn.cursor() as cur:
        for start in range(0, len(values), batch_size):
            batch = values[start : start + batch_size]
            cur.executemany(statement, [[_adapt(row[c]) for c in columns] for row in batch], returning=True)
            flags = []
            while True:
                row = cur.fetchone()
                if row is not None:
                    flags.append(row[0])
                if not cur.nextset():
                    break
            result.inserted += sum(1 for f in flags if f)
            result.updated += sum(1 for f in flags if not f)
            result.unchanged += len(batch) - len(flags)
    return result
