"""Session fixtures: an embedded PostgreSQL warehouse and an isolated Airflow home.

Airflow reads its configuration at import time, so the environment is set here, before any test
module imports airflow.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_TEST_HOME = Path(tempfile.mkdtemp(prefix="paceline-test-"))
atexit.register(shutil.rmtree, _TEST_HOME, ignore_errors=True)
REPO_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("AIRFLOW_HOME", str(_TEST_HOME / "airflow"))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO_ROOT / "dags")
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.setdefault("PACELINE_VAR_DIR", str(_TEST_HOME / "var"))

WAREHOUSE_TABLES_TO_CLEAN = "paceline.watermarks, paceline.sync_audit, paceline.rejected_records"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[object]:
    from paceline.db.embedded import EmbeddedPostgres, free_port

    # Password authentication, as `make run` has it: the suite exercises the same login path.
    server = EmbeddedPostgres(_TEST_HOME / "pg", free_port(), _TEST_HOME / "pg.password").start()
    yield server
    from paceline.http.limiter import SharedRateLimiter

    SharedRateLimiter.close_all()  # its leak threads would otherwise query a stopped server
    server.stop()


@pytest.fixture(scope="session")
def warehouse_dsn(pg_server) -> str:
    """A migrated warehouse database; AIRFLOW_CONN_PACELINE_WAREHOUSE points at it."""
    from paceline.db.migrations import upgrade

    dsn = pg_server.ensure_database("paceline_test")
    upgrade(dsn)
    os.environ["AIRFLOW_CONN_PACELINE_WAREHOUSE"] = json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": pg_server.port, "login": "postgres",
         "password": pg_server.password, "schema": "paceline_test"}
    )
    return dsn


@pytest.fixture
def warehouse(warehouse_dsn: str) -> Iterator[str]:
    """The warehouse DSN, with Paceline's bookkeeping tables emptied before the test."""
    import psycopg

    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {WAREHOUSE_TABLES_TO_CLEAN}")  # noqa: S608 - constant table list
    yield warehouse_dsn
