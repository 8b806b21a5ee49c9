"""Fixtures of the NBA tests: one BigQuery emulator and one Airflow metadata database per session.

The emulator needs ``.venv-bq`` (``scripts/setup-bq-emulator.sh``). Without it every test here is
skipped with that reason, and the run ends with a banner saying so: a green run without the
emulator has not tested the NBA pipeline.
"""

from __future__ import annotations

import atexit
import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from paceline.sandbox import bigquery as sb

REPO_ROOT = Path(__file__).resolve().parents[2]
_HOME = Path(tempfile.mkdtemp(prefix="paceline-nba-test-"))
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
# Airflow reads its configuration when first imported; the root conftest sets the same values.
os.environ.setdefault("AIRFLOW_HOME", str(_HOME / "airflow"))
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO_ROOT / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"

MISSING_VENV = (
    f"BigQuery emulator venv missing ({sb.bq_python()}): run scripts/setup-bq-emulator.sh. "
    "ALL NBA TESTS SKIPPED."
)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not sb.emulator_available():
        terminalreporter.write_sep("!", MISSING_VENV, red=True, bold=True)


@pytest.fixture(scope="session")
def emulator() -> Iterator[sb.EmulatorProcess]:
    """The emulator, in memory, with the contract's schema; its env is exported for Airflow."""
    if not sb.emulator_available():
        pytest.skip(MISSING_VENV)
    process = sb.start_emulator(_HOME / "bigquery", persistent=False)
    saved = {key: os.environ.get(key) for key in process.env()}
    os.environ.update(process.env())
    sb.ensure_schema(process.client())
    yield process
    process.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def client(emulator: sb.EmulatorProcess) -> Any:
    """The pipeline's own client (``paceline.providers.bigquery``) on the emulator."""
    return emulator.rest_client()


@pytest.fixture(scope="session")
def small_seed(client: Any) -> sb.SeedStats:
    """The "small" scale (2022-02-10..27, All-Star break included), seeded once."""
    return sb.seed_scale(client, "small")


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Airflow's metadata database (SQLite in AIRFLOW_HOME), migrated once per session."""
    from airflow.utils.db import initdb

    initdb()


_next_day = [dt.date(2025, 1, 1)]  # after start_date, in the past (a future day waits for its games)


@pytest.fixture
def fresh_day() -> dt.date:
    """A game day no other test touches (crafted rows live far from the seeded range)."""
    day = _next_day[0]
    _next_day[0] = day + dt.timedelta(days=1)
    return day
