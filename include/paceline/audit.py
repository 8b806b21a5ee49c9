"""The audit trail of units of work, and the table of records that could not be parsed."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

INSERT_AUDIT = """
INSERT INTO paceline.sync_audit (
    provider, integration_id, timing_partner_id, unit, sync_type, status,
    rows_inserted, rows_updated, rows_removed, rows_rejected, calls, estimated_size, actual_size,
    error, dag_id, run_id, task_id, map_index, try_number, started_at, finished_at)
VALUES (%(provider)s, %(integration_id)s, %(timing_partner_id)s, %(unit)s, %(sync_type)s, %(status)s,
    %(rows_inserted)s, %(rows_updated)s, %(rows_removed)s, %(rows_rejected)s, %(calls)s, %(estimated_size)s,
    %(actual_size)s, %(error)s, %(dag_id)s, %(run_id)s, %(task_id)s, %(map_index)s, %(try_number)s,
    %(started_at)s, now())
"""
# Once per record: the same body rejected for the same reason again is counted, not stored again
# (the unique index of migration 0005).
INSERT_REJECTED = """
INSERT INTO paceline.rejected_records (provider, integration_id, unit, record_key, reason, raw, dag_id, run_id)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (provider, coalesce(integration_id, ''), coalesce(unit, ''), coalesce(record_key, ''), reason, md5(raw))
DO UPDATE SET times_seen = paceline.rejected_records.times_seen + 1, last_seen_at = now(),
              dag_id = EXCLUDED.dag_id, run_id = EXCLUDED.run_id
"""


def airflow_context_ids() -> dict[str, Any]:
    """dag/run/task ids of the running task, from the environment Airflow sets for task processes."""
    return {
        "dag_id": os.environ.get("AIRFLOW_CTX_DAG_ID"),
        "run_id": os.environ.get("AIRFLOW_CTX_DAG_RUN_ID"),
        "task_id": os.environ.get("AIRFLOW_CTX_TASK_ID"),
        "map_index": int(os.environ["AIRFLOW_CTX_MAP_INDEX"]) if os.environ.get("AIRFLOW_CTX_MAP_INDEX") else None,
        "try_number": int(os.environ["AIRFLOW_CTX_TRY_NUMBER"]) if os.environ.get("AIRFLOW_CTX_TRY_NUMBER") else None,
    }


@dataclass
class AuditRecord:
    provider: str
    unit: str
    sync_type: str
    integration_id: str | None = None
    timing_partner_id: int | None = None
    status: str = "success"
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_removed: int = 0
    rows_rejected: int = 0
    calls: int = 0
    estimated_size: int | None = None
    actual_size: int | None = None
    error: str | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def write(self, conn: psycopg.Connection) -> None:
        conn.execute(INSERT_AUDIT, {**self.__dict__, **airflow_context_ids()})


def reject(
    conn: psycopg.Connection,
    *,
    provider: str,
    reason: str,
    raw: Any,
    integration_id: str | None = None,
    unit: str | None = None,
    record_key: str | None = None,
) -> None:
    """Keep a record that could not be parsed, with the reason, for a person to inspect; a record
    rejected again (same body, same reason) is counted in times_seen rather than stored twice."""
    body = raw if isinstance(raw, str) else json.dumps(raw, default=str, ensure_ascii=False)
    ids = airflow_context_ids()
    conn.execute(INSERT_REJECTED, (provider, integration_id, unit, record_key, reason, body, ids["dag_id"], ids["run_id"]))
