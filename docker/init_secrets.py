#!/usr/bin/env python3
"""Generate the secret files docker-compose.yaml reads (Compose `secrets:`), once.

    python3 docker/init_secrets.py [--dir secrets]

Standard library only (run it on the Docker host, no virtualenv needed). Existing files are kept,
so running it again only fills in what is missing; delete a file to rotate that secret (and see
docs/docker-compose.md for what else must change with it: a database password is set when the
volume is created).

The folder is created with mode 700 so that no other user of the host can read a secret. The
files inside are 644: Compose bind-mounts them into containers whose users (airflow 50000,
postgres 999, redis 999) differ from the host's, and each container only sees the files its
service lists.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

FILE_MODE = 0o644  # inside a 700 folder: see the docstring
HOSTS = {"postgres": "postgres", "redis": "redis"}  # service names on the Compose network


def _token() -> str:
    # URL-safe characters only: several of these end up inside URLs.
    return secrets.token_urlsafe(32)


def _write(folder: Path, name: str, value: str) -> bool:
    """Create folder/name holding value unless it exists; True when written."""
    try:
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    os.chmod(folder / name, FILE_MODE)  # the open mode is filtered by the umask; the folder guards it
    return True


def _read_or_create(folder: Path, name: str, make: Callable[[], str]) -> str:
    _write(folder, name, make())
    return (folder / name).read_text().strip()


def generate(folder: Path) -> list[str]:
    """Create every missing secret file in `folder`; return the names written."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)

    def put(name: str, value: str) -> None:
        _write(folder, name, value)

    before = set(os.listdir(folder))
    postgres = _read_or_create(folder, "postgres_superuser_password", _token)
    airflow_db = _read_or_create(folder, "airflow_db_password", _token)
    warehouse = _read_or_create(folder, "warehouse_password", _token)
    redis = _read_or_create(folder, "redis_password", _token)
    del postgres  # only the postgres service reads it

    put("airflow_db_url", f"postgresql+psycopg2://airflow:{airflow_db}@{HOSTS['postgres']}:5432/airflow")
    put("redis_conf", f"requirepass {redis}\n")
    put("celery_broker_url", f"redis://:{redis}@{HOSTS['redis']}:6379/0")
    put("celery_result_backend", f"redis://:{redis}@{HOSTS['redis']}:6379/1")
    put("fernet_key", base64.urlsafe_b64encode(os.urandom(32)).decode())
    put("jwt_secret", _token())
    put("api_secret_key", _token())
    put("admin_password", secrets.token_urlsafe(16))
    put("flower_basic_auth", f"flower:{secrets.token_urlsafe(16)}")
    # Airflow's LocalFilesystemBackend format: conn_id -> connection. Add the providers' connections
    # here for production (docs/docker-compose.md).
    connections = {
        "paceline_warehouse": {
            "conn_type": "postgres",
            "host": HOSTS["postgres"],
            "port": 5432,
            "login": "paceline",
            "password": warehouse,
            "schema": "paceline",
            "extra_dejson": {"sslmode": "prefer"},
        }
    }
    put("paceline_connections.json", json.dumps(connections, indent=2) + "\n")
    return sorted(set(os.listdir(folder)) - before)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[1] / "secrets"
    parser.add_argument("--dir", type=Path, default=default, help=f"where to write them (default {default})")
    args = parser.parse_args(argv)
    written = generate(args.dir)
    print(f"{args.dir}: {'created ' + ', '.join(written) if written else 'every secret already exists'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
