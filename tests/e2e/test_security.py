"""The started stack (`paceline run`, tests/e2e/conftest.py) is closed to other local users and to the network."""

from __future__ import annotations

import json
import os
import pwd
import socket
import stat
import urllib.error
import urllib.parse
import urllib.request

import psutil
import psycopg
import pytest

from paceline import local_stack
from paceline.db.embedded import SYSTEM_USER
from tests.e2e.conftest import Stack


def _processes(stack: Stack) -> list[psutil.Process]:
    return [psutil.Process(stack.process.pid), *psutil.Process(stack.process.pid).children(recursive=True)]


def _listening(stack: Stack, port: int) -> set[str]:
    """The local addresses on which the stack's processes listen on `port`."""
    found: set[str] = set()
    for process in _processes(stack):
        try:
            connections = process.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found |= {c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
    return found


def _non_loopback_addresses() -> list[str]:
    return [
        address.address
        for addresses in psutil.net_if_addrs().values()
        for address in addresses
        if address.family == socket.AF_INET and not address.address.startswith("127.")
    ]


def test_postgres_refuses_clients_without_the_password(stack: Stack) -> None:
    for user, database in (("postgres", "postgres"), ("postgres", "airflow"), ("paceline", "paceline")):
        with pytest.raises(psycopg.OperationalError, match="no password supplied"):
            psycopg.connect(f"postgresql://{user}@127.0.0.1:{stack.pg_port}/{database}", connect_timeout=10).close()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(f"postgresql://postgres:guess@127.0.0.1:{stack.pg_port}/postgres", connect_timeout=10).close()
    with psycopg.connect(stack.dsn("airflow", "postgres")) as conn:
        hba = conn.execute("SELECT DISTINCT auth_method FROM pg_hba_file_rules WHERE error IS NULL").fetchall()
    assert hba == [("scram-sha-256",)]


def test_warehouse_role_is_no_superuser_owns_the_warehouse_and_cannot_reach_airflows_database(stack: Stack) -> None:
    with psycopg.connect(stack.dsn()) as conn:
        role = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'paceline'").fetchone()[0]
        tables_of_others = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname IN ('paceline', 'registrations', 'racing') AND tableowner <> current_user"
        ).fetchone()[0]
    assert role == (False, False, False, False, False)
    assert owner == "paceline" and tables_of_others == 0
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(stack.dsn("airflow", "paceline"), connect_timeout=10).close()
    # What the running Airflow processes hold: the warehouse connection logs in as that role.
    scheduler = next(p for p in _processes(stack) if "scheduler" in " ".join(p.cmdline()))
    conn = json.loads(scheduler.environ()["AIRFLOW_CONN_PACELINE_WAREHOUSE"])
    assert (conn["login"], conn["schema"]) == ("paceline", "paceline") and conn["password"]


def test_airflow_logs_in_to_its_metadata_as_a_role_that_is_no_superuser(stack: Stack) -> None:
    scheduler = next(p for p in _processes(stack) if "scheduler" in " ".join(p.cmdline()))
    url = urllib.parse.urlsplit(scheduler.environ()["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert url.username == local_stack.METADATA_ROLE and url.password
    as_airflow = f"postgresql://{url.username}:{url.password}@127.0.0.1:{stack.pg_port}/airflow"
    with psycopg.connect(as_airflow) as conn:
        role = conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user").fetchone()
        owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'airflow'").fetchone()[0]
        tables = conn.execute("SELECT count(*), count(*) FILTER (WHERE tableowner <> current_user) FROM pg_tables "
                              "WHERE schemaname = 'public'").fetchone()
    assert role == (False, False, False) and owner == local_stack.METADATA_ROLE
    assert tables[0] > 50 and tables[1] == 0, tables  # Airflow's tables, all its role's
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(as_airflow.rsplit("/", 1)[0] + "/paceline", connect_timeout=10).close()


def test_log_server_refuses_unsigned_requests(stack: Stack) -> None:
    """Airflow binds its log server (scheduler, triggerer) to every interface; it must ask for a token."""
    scheduler = next(p for p in _processes(stack) if "scheduler" in " ".join(p.cmdline()))
    port = int(scheduler.environ().get("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", "8793"))
    assert _listening(stack, port), f"no log server on {port}"
    request = urllib.request.Request(f"http://127.0.0.1:{port}/log/dag_id=x/run_id=y/task_id=z/attempt=1.log")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310 - loopback
    assert refused.value.code == 403


def test_local_state_is_private(stack: Stack) -> None:
    var_mode = stat.S_IMODE(stack.var.stat().st_mode)
    if os.geteuid() == 0:
        # As root the server runs as its own account, whose group alone may traverse var/ (no listing).
        assert var_mode in (0o700, 0o710), oct(var_mode)
        if var_mode == 0o710:
            assert stack.var.stat().st_gid == pwd.getpwnam(SYSTEM_USER).pw_gid
    else:
        assert var_mode == 0o700, oct(var_mode)
    assert stat.S_IMODE((stack.var / "airflow").stat().st_mode) == 0o700
    secrets = [
        stack.var / local_stack.SUPERUSER_PASSWORD_FILE,
        stack.var / local_stack.WAREHOUSE_PASSWORD_FILE,
        stack.var / local_stack.METADATA_PASSWORD_FILE,
        stack.var / "airflow" / "jwt_secret",
        stack.var / "airflow" / "api_secret_key",
        stack.var / "airflow" / "simple_auth_manager_passwords.json",
    ]
    modes = {path.name: oct(stat.S_IMODE(path.stat().st_mode)) for path in secrets}
    assert set(modes.values()) == {"0o600"}, modes


def test_api_server_and_postgres_listen_on_loopback_only(stack: Stack) -> None:
    api_port = int(stack.api.rsplit(":", 1)[1])
    assert _listening(stack, api_port) == {"127.0.0.1"}
    # The server runs as its own account when root: look at every process, not only the stack's children.
    pg_listeners = {
        c.laddr.ip for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.laddr.port == stack.pg_port
    }
    assert pg_listeners == {"127.0.0.1"}
    for address in _non_loopback_addresses():
        for port in (api_port, stack.pg_port):
            with socket.socket() as sock:
                sock.settimeout(5)
                assert sock.connect_ex((address, port)) != 0, f"{address}:{port} accepts connections"
