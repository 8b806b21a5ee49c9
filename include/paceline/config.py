"""Where Paceline keeps its local state, and the names every module agrees on."""

from __future__ import annotations

import os
from pathlib import Path

WAREHOUSE_CONN_ID = "paceline_warehouse"
RACING_API_CONN_ID = "racing_api"
GOOGLE_CONN_ID = "google_cloud_default"


def project_root() -> Path:
    """The repository folder (PACELINE_HOME overrides it, e.g. in docker-compose)."""
    override = os.environ.get("PACELINE_HOME")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2]


def var_dir() -> Path:
    """Git-ignored folder for local state: the embedded PostgreSQL, Airflow home, sandbox state."""
    path = Path(os.environ.get("PACELINE_VAR_DIR", project_root() / "var"))
    # Private from the start: it holds the database, its passwords and Airflow's secrets.
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def pools_file() -> Path:
    return project_root() / "config" / "pools.json"
