"""Per-(integration, scope) cursors that advance only with the data they cover.

Kept in the warehouse (``paceline.watermarks``), not in Airflow's task state store: the cursor
must commit in the same transaction as the rows it covers (a killed task then leaves both as
they were), and it must survive a cleared task (Airflow wipes a task's state on clear, which
would silently turn every cleared incremental into a full sync, or worse, lose the cursor of
work that did commit).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

SELECT_WATERMARK = """
SELECT cursor_value, last_full_sync_at, updated_at
FROM paceline.watermarks WHERE integration_id = %s AND scope = %s
"""
UPSERT_WATERMARK = """
INSERT INTO paceline.watermarks (integration_id, scope, cursor_value, last_full_sync_at, updated_at)
VALUES (%s, %s, %s, %s, now())
ON CONFLICT (integration_id, scope) DO UPDATE SET
    cursor_value = EXCLUDED.cursor_value,
    last_full_sync_at = COALESCE(EXCLUDED.last_full_sync_at, paceline.watermarks.last_full_sync_at),
    updated_at = now()
"""
DELETE_WATERMARK = "DELETE FROM paceline.watermarks WHERE integration_id = %s AND scope = %s"


@dataclass(frozen=True)
class Watermark:
    cursor_value: str
    last_full_sync_at: datetime | None
    updated_at: datetime


def get(conn: psycopg.Connection, integration_id: str, scope: str) -> Watermark | None:
    row = conn.execute(SELECT_WATERMARK, (integration_id, scope)).fetchone()
    return Watermark(*row) if row else None


def advance(
    conn: psycopg.Connection, integration_id: str, scope: str, cursor_value: str, *, full_sync_at: datetime | None = None
) -> None:
    """Store the cursor; call it inside the transaction that writes the data it covers."""
    conn.execute(UPSERT_WATERMARK, (integration_id, scope, cursor_value, full_sync_at))


def reset(conn: psycopg.Connection, integration_id: str, scope: str) -> None:
    conn.execute(DELETE_WATERMARK, (integration_id, scope))
