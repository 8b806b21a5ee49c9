"""Versioned SQL migrations: `python -m paceline db upgrade`.

Files in ``migrations/`` named ``NNNN_description.sql`` are applied in order, each in its own
transaction, and recorded in ``paceline.schema_migrations`` with a checksum. A transaction-level
advisory lock serialises concurrent upgrades, so running it while DAGs run (or twice at once) is
safe; the statements themselves are additive (``IF NOT EXISTS``) so that tasks keep working.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import psycopg

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
UPGRADE_LOCK_ID = 7_415_001  # any constant shared by every upgrader

CREATE_LEDGER = """
CREATE SCHEMA IF NOT EXISTS paceline;
CREATE TABLE IF NOT EXISTS paceline.schema_migrations (
    version text PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
SELECT_APPLIED = "SELECT version, checksum FROM paceline.schema_migrations"
RECORD_APPLIED = "INSERT INTO paceline.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)"


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        version, _, name = path.stem.partition("_")
        migrations.append(Migration(version, name, path.read_text()))
    return migrations


def upgrade(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations; return the versions applied (empty when up to date)."""
    applied_now: list[str] = []
    with psycopg.connect(dsn) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (UPGRADE_LOCK_ID,))
            conn.execute(CREATE_LEDGER)
        for migration in discover(directory):
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (UPGRADE_LOCK_ID,))
                applied = dict(conn.execute(SELECT_APPLIED).fetchall())
                if migration.version in applied:
                    if applied[migration.version] != migration.checksum:
                        raise RuntimeError(
                            f"migration {migration.version}_{migration.name} changed after it was applied; "
                            "add a new migration instead of editing an applied one"
                        )
                    continue
                conn.execute(migration.sql)
                conn.execute(RECORD_APPLIED, (migration.version, migration.name, migration.checksum))
                applied_now.append(migration.version)
    return applied_now
