"""The embedded PostgreSQL's security: password authentication, least-privileged roles, private files.

Each test starts a server of its own in a private temporary folder (a second or two each).
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from paceline.db.embedded import EmbeddedPostgres, free_port, persisted_secret, write_secret
from paceline.db.migrations import upgrade


@pytest.fixture
def var() -> Iterator[Path]:
    # Not under pytest's tmp_path: any pytest session starting meanwhile resets /tmp/pytest-of-<user>
    # to 700, which locks the server's own account (as root) out of its data folder.
    with tempfile.TemporaryDirectory(prefix="paceline-test-") as home:
        path = Path(home) / "var"
        path.mkdir(mode=0o700)
        yield path


@pytest.fixture
def servers() -> Iterator[list[EmbeddedPostgres]]:
    started: list[EmbeddedPostgres] = []
    yield started
    for server in started:
        server.stop()


def _refused(uri: str) -> str:
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(uri, connect_timeout=5).close()
    return str(caught.value)


def test_secret_files_are_private_from_the_moment_they_exist(tmp_path: Path) -> None:
    previous = os.umask(0)  # a umask would hide a chmod-after-write: with 0 only the open mode counts
    try:
        value = persisted_secret(tmp_path / "secret")
        assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600
        assert persisted_secret(tmp_path / "secret") == value  # generated once, then kept
        with pytest.raises(FileExistsError):
            write_secret(tmp_path / "secret", "another")  # never overwrites (nor reopens a planted file)
    finally:
        os.umask(previous)
    assert len(value) >= 32


def test_a_server_with_a_password_file_refuses_clients_without_the_password(var: Path, servers: list) -> None:
    pg = EmbeddedPostgres(var / "postgres", free_port(), var / "superuser.password")
    servers.append(pg.start())
    assert stat.S_IMODE(pg.password_file.stat().st_mode) == 0o600
    assert "no password supplied" in _refused(pg.uri(password=""))
    assert "password authentication failed" in _refused(pg.uri(password="wrong"))
    with psycopg.connect(pg.uri()) as conn:
        assert conn.execute("SELECT current_setting('password_encryption')").fetchone()[0] == "scram-sha-256"
    assert not pg.trusts_clients()
    # var/ stays private: at most the server's own group (as root) may traverse it.
    mode = stat.S_IMODE(var.stat().st_mode)
    assert mode & 0o007 == 0 and mode & 0o070 in (0, 0o010), oct(mode)


def test_warehouse_role_owns_its_database_and_cannot_reach_the_metadata_database(var: Path, servers: list) -> None:
    pg = EmbeddedPostgres(var / "postgres", free_port(), var / "superuser.password")
    servers.append(pg.start())
    pg.ensure_role("paceline", "warehouse-pw")
    pg.ensure_database("airflow")
    warehouse = pg.ensure_database("paceline", owner="paceline")
    pg.restrict_connect("airflow")
    as_role = pg.uri("paceline", "paceline", "warehouse-pw")
    assert upgrade(as_role)  # migrations run as the owner, not the superuser
    with psycopg.connect(as_role) as conn:
        assert conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user").fetchone() == (
            False, False, False,
        )  # fmt: skip
    assert "permission denied for database" in _refused(pg.uri("airflow", "paceline", "warehouse-pw"))
    with psycopg.connect(warehouse) as conn:  # the superuser still connects everywhere
        assert conn.execute("SELECT count(*) FROM paceline.schema_migrations").fetchone()[0] >= 1
    pg.ensure_role("paceline", "changed-pw")  # idempotent, and it resets the password
    psycopg.connect(pg.uri("paceline", "paceline", "changed-pw")).close()
    with pytest.raises(RuntimeError, match="superuser"):
        pg.ensure_role("postgres", "x")


def test_an_older_trust_data_folder_is_switched_to_passwords_and_handed_to_the_warehouse_role(
    var: Path, servers: list
) -> None:
    port = free_port()
    old = EmbeddedPostgres(var / "postgres", port)  # what older versions did: --auth=trust
    servers.append(old.start())
    warehouse = old.ensure_database("paceline")
    upgrade(warehouse)  # schemas, tables and bigserial sequences owned by the superuser
    with psycopg.connect(warehouse) as conn:
        conn.execute("CREATE SEQUENCE public.standalone_seq")
        conn.execute("CREATE TABLE public.limiter_bucket (id bigserial PRIMARY KEY, name text)")
    old.stop()
    assert old.trusts_clients()

    pg = EmbeddedPostgres(var / "postgres", port, var / "superuser.password")
    servers.append(pg.start())
    assert not pg.trusts_clients()
    assert "no password supplied" in _refused(pg.uri(password=""))
    pg.ensure_role("paceline", "warehouse-pw")
    pg.hand_over_database("paceline", "paceline")
    pg.hand_over_database("paceline", "paceline")  # idempotent
    as_role = pg.uri("paceline", "paceline", "warehouse-pw")
    with psycopg.connect(as_role) as conn:
        foreign = conn.execute(
            "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname IN ('public', 'paceline', 'registrations', 'racing') AND c.relowner <> 'paceline'::regrole"
        ).fetchall()
        assert foreign == []
        conn.execute("INSERT INTO public.limiter_bucket (name) VALUES ('k')")
        conn.execute("SELECT nextval('public.standalone_seq')")
        conn.execute("CREATE TABLE paceline.added_later (id int)")
    upgrade(as_role)  # the ledger and every schema are the role's: a later upgrade runs as it

    pg.stop()  # a restart keeps the password (and does not migrate again)
    servers.append(pg.start())
    psycopg.connect(pg.uri()).close()


def test_a_lost_password_file_fails_with_a_message_that_says_what_to_do(var: Path, servers: list) -> None:
    pg = EmbeddedPostgres(var / "postgres", free_port(), var / "superuser.password")
    servers.append(pg.start())
    pg.stop()
    pg.password_file.unlink()
    with pytest.raises(RuntimeError, match="refuses the superuser password"):
        pg.start()


def test_local_stack_settings_bind_loopback_and_log_in_as_the_warehouse_role(tmp_path: Path, monkeypatch) -> None:
    import json

    from paceline import local_stack

    monkeypatch.setenv("PACELINE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("PACELINE_API_HOST", raising=False)
    previous = os.umask(0)  # with 0, only the modes the files are created with count
    try:
        env = local_stack.airflow_env(54329, 8080)
    finally:
        os.umask(previous)
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    conn = json.loads(env["AIRFLOW_CONN_PACELINE_WAREHOUSE"])
    assert (conn["login"], conn["schema"]) == ("paceline", "paceline") and conn["password"]
    # Airflow logs in to its metadata database as its own role, never as the superuser.
    metadata_password = (tmp_path / "var" / local_stack.METADATA_PASSWORD_FILE).read_text()
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith(f"postgresql+psycopg2://airflow:{metadata_password}@")
    assert not (tmp_path / "var" / local_stack.SUPERUSER_PASSWORD_FILE).exists()  # Airflow's settings never read it
    home = tmp_path / "var" / "airflow"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for path in [*home.iterdir(), *(tmp_path / "var").glob("*.password")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    monkeypatch.setenv("PACELINE_API_HOST", "0.0.0.0")  # noqa: S104 - the user's explicit choice
    opened = local_stack.airflow_env(54329, 8080)
    assert opened["AIRFLOW__API__HOST"] == "0.0.0.0"  # noqa: S104
    assert opened["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8080/execution/"


def test_make_run_on_an_older_var_brings_it_in_line(var: Path, servers: list, monkeypatch) -> None:
    """What `make run` does on a var/ of an older Paceline: trust auth, everything owned by postgres."""
    from paceline import local_stack

    port = free_port()
    old = EmbeddedPostgres(var / "postgres", port)
    servers.append(old.start())
    with psycopg.connect(old.ensure_database("airflow")) as conn:  # Airflow's tables, made as the superuser
        conn.execute("CREATE TABLE public.dag_run (id serial PRIMARY KEY, dag_id text)")
    upgrade(old.ensure_database("paceline"))
    old.stop()

    monkeypatch.setenv("PACELINE_VAR_DIR", str(var))
    pg = local_stack.embedded_postgres(port)
    servers.append(pg.start())
    warehouse = local_stack.prepare_databases(pg)
    local_stack.prepare_databases(pg)  # every start runs it again
    assert upgrade(warehouse) == []  # the role sees the applied ledger and owns it
    with psycopg.connect(warehouse) as conn:
        conn.execute("INSERT INTO paceline.schema_migrations (version, name, checksum) VALUES ('9999', 'probe', 'x')")
    password = (var / local_stack.WAREHOUSE_PASSWORD_FILE).read_text()
    assert "permission denied for database" in _refused(pg.uri("airflow", "paceline", password))
    # Airflow's role owns its database and what the superuser made there, and nothing else.
    metadata_password = (var / local_stack.METADATA_PASSWORD_FILE).read_text()
    metadata = pg.uri("airflow", local_stack.METADATA_ROLE, metadata_password)
    with psycopg.connect(metadata) as conn:
        assert conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user").fetchone() == (
            False, False, False,
        )  # fmt: skip
        conn.execute("INSERT INTO public.dag_run (dag_id) VALUES ('probe')")
        conn.execute("ALTER TABLE public.dag_run ADD COLUMN note text")  # Airflow's migrations run as the owner
    assert "permission denied for database" in _refused(pg.uri("paceline", local_stack.METADATA_ROLE, metadata_password))
    assert "no password supplied" in _refused(f"postgresql://postgres@127.0.0.1:{port}/airflow")
