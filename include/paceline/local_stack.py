"""`make run`: the whole stack on one machine, on the embedded defaults.

Starts an embedded PostgreSQL (data under var/postgres, kept across restarts) holding Airflow's
metadata database and the warehouse, migrates both, imports the pools, starts the stand-ins and
the BigQuery emulator, writes the connections, starts Airflow 3 (api-server, scheduler,
dag-processor, triggerer; LocalExecutor), unpauses the DAGs and prints the UI address and login.
Ctrl+C stops every process it started. A lock file makes a second instance fail clearly.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg

from paceline.config import pools_file, project_root, var_dir
from paceline.db.embedded import SUPERUSER, EmbeddedPostgres, persisted_secret, write_secret

AIRFLOW_DB = "airflow"
WAREHOUSE_DB = "paceline"
# The warehouse's own login: owns the `paceline` database, is no superuser, cannot connect to `airflow`.
WAREHOUSE_ROLE = "paceline"
# Airflow's own login: owns the `airflow` (metadata) database, is no superuser, cannot connect to `paceline`.
METADATA_ROLE = "airflow"
# Secrets in var/ (mode 700), each file created at mode 600.
SUPERUSER_PASSWORD_FILE = "postgres-superuser.password"
WAREHOUSE_PASSWORD_FILE = "paceline-warehouse.password"
METADATA_PASSWORD_FILE = "airflow-metadata.password"
LOOPBACK = "127.0.0.1"
ADMIN_USER = "admin"
AIRFLOW_PROCESSES = ("api-server", "scheduler", "dag-processor", "triggerer")


def private_dir(path: Path) -> Path:
    """Create `path` (or tighten an older one) so that only its owner can enter it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    # As root, the embedded server's account keeps the group traverse right EmbeddedPostgres gave it
    # (var/ holds its data folder); a second `make run` must not cut a running server off.
    keep = path.stat().st_mode & 0o010 if os.geteuid() == 0 else 0
    path.chmod(0o700 | keep)
    return path


def embedded_postgres(pg_port: int) -> EmbeddedPostgres:
    """The local stack's server: data in var/postgres, superuser password in var/ (mode 600)."""
    var = var_dir()
    return EmbeddedPostgres(var / "postgres", pg_port, var / SUPERUSER_PASSWORD_FILE)


def warehouse_password() -> str:
    return persisted_secret(var_dir() / WAREHOUSE_PASSWORD_FILE)


def metadata_password() -> str:
    return persisted_secret(var_dir() / METADATA_PASSWORD_FILE)


def metadata_uri(pg: EmbeddedPostgres) -> str:
    """Airflow's SQLAlchemy URL for its metadata database, as its own role."""
    return pg.uri(AIRFLOW_DB, METADATA_ROLE, metadata_password()).replace("postgresql://", "postgresql+psycopg2://", 1)


def api_host() -> str:
    """Where the api-server listens: loopback unless PACELINE_API_HOST (or `run --host`) says otherwise."""
    return os.environ.get("PACELINE_API_HOST") or LOOPBACK


def _reachable(host: str) -> str:
    """The address local clients use for an api-server bound to `host`."""
    return LOOPBACK if host in ("0.0.0.0", "::", "", "localhost") else host  # noqa: S104 - compared, not bound


def airflow_env(pg_port: int, api_port: int) -> dict[str, str]:
    """The environment every Airflow process of the local stack shares."""
    home = private_dir(var_dir() / "airflow")
    root = project_root()
    passwords = home / "simple_auth_manager_passwords.json"
    if not passwords.exists():
        write_secret(passwords, json.dumps({ADMIN_USER: secrets.token_urlsafe(12)}))
    pg = embedded_postgres(pg_port)
    host = api_host()
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_uri(pg),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{_reachable(host)}:{api_port}/execution/",
            "AIRFLOW__API__HOST": host,
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API_AUTH__JWT_SECRET": persisted_secret(home / "jwt_secret"),
            "AIRFLOW__API__SECRET_KEY": persisted_secret(home / "api_secret_key"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW_CONN_PACELINE_WAREHOUSE": json.dumps(
                {"conn_type": "postgres", "host": LOOPBACK, "port": pg_port, "login": WAREHOUSE_ROLE,
                 "password": warehouse_password(), "schema": WAREHOUSE_DB}
            ),
        }
    )
    return env


def _airflow(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    airflow = str(Path(sys.executable).with_name("airflow"))
    return subprocess.run([airflow, *args], env=env, check=check, capture_output=True, text=True)  # noqa: S603


def _wait_healthy(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    return False


def dag_ids(env: dict[str, str]) -> list[str]:
    """The DAG ids Airflow has parsed from dags/."""
    listed = _airflow(env, "dags", "list", "-o", "json", check=False)
    # Airflow prints import warnings on stdout before the JSON document.
    lines = listed.stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("[")), None)
    if start is None:
        return []
    try:
        return [row["dag_id"] for row in json.loads("\n".join(lines[start:]))]
    except (json.JSONDecodeError, KeyError, TypeError):
        return []


def _signal_sessions(sessions: set[int], signum: int) -> None:
    """Send signum to every process of the given sessions (each Airflow process starts one)."""
    import psutil

    for pid in psutil.pids():
        with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
            if os.getsid(pid) in sessions:
                os.kill(pid, signum)


def prepare_databases(pg: EmbeddedPostgres) -> str:
    """The two databases, each owned by a least-privileged role of its own that cannot connect to
    the other's; return the warehouse URI (as its role). The superuser serves only this set-up.

    Idempotent, and it brings a var/ of an older Paceline (everything owned by the superuser) in line.
    """
    password = warehouse_password()
    pg.ensure_role(WAREHOUSE_ROLE, password)
    pg.ensure_role(METADATA_ROLE, metadata_password())
    pg.ensure_database(AIRFLOW_DB, owner=METADATA_ROLE)
    pg.hand_over_database(AIRFLOW_DB, METADATA_ROLE)
    pg.ensure_database(WAREHOUSE_DB, owner=WAREHOUSE_ROLE)
    pg.hand_over_database(WAREHOUSE_DB, WAREHOUSE_ROLE)
    pg.restrict_connect(AIRFLOW_DB, METADATA_ROLE)
    pg.restrict_connect(SUPERUSER)  # the maintenance database is the superuser's alone
    pg.restrict_connect(WAREHOUSE_DB, WAREHOUSE_ROLE)
    return pg.uri(WAREHOUSE_DB, WAREHOUSE_ROLE, password)


def run(scale: str = "small", port: int = 8080, host: str | None = None) -> int:
    if host:
        os.environ["PACELINE_API_HOST"] = host
    var = private_dir(var_dir())
    lock_handle = open(var / "run.lock", "w")  # noqa: SIM115 - held for the life of the process
    try:
        fcntl.flock(lock_handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"another `make run` is already running on {var} (lock {var / 'run.lock'}); stop it first", file=sys.stderr)
        return 2
    lock_handle.write(str(os.getpid()))
    lock_handle.flush()

    pg_port = int(os.environ.get("PACELINE_PG_PORT", "54329"))
    pg = embedded_postgres(pg_port)
    processes: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False

    def shutdown(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, shutdown)
    signal.signal(signal.SIGTERM, shutdown)
    try:
        print(f"starting PostgreSQL on 127.0.0.1:{pg_port} (data in {pg.datadir})", flush=True)
        pg.start(reuse_running=True)
        warehouse_uri = prepare_databases(pg)
        env = airflow_env(pg_port, port)
        os.environ.update({k: v for k, v in env.items() if k.startswith(("AIRFLOW", "PACELINE"))})

        print("migrating Airflow's metadata database (airflow db migrate)", flush=True)
        _airflow(env, "db", "migrate")
        print("migrating the warehouse (python -m paceline db upgrade)", flush=True)
        from paceline.db.migrations import upgrade

        upgrade(warehouse_uri)
        print(f"importing pools from {pools_file()}", flush=True)
        _airflow(env, "pools", "import", str(pools_file()))
        from paceline.ops import integrations as ops_integrations

        with psycopg.connect(warehouse_uri) as conn:
            imported = ops_integrations.import_file(conn)
        print(f"importing integrations from {ops_integrations.integrations_file()}: {len(imported)}", flush=True)

        if ops_integrations.sandbox_enabled():
            print(f"starting the local stand-ins (python -m paceline sandbox up --scale {scale})", flush=True)
            from paceline.sandbox import manager

            state = manager.up(scale=scale)
            print(manager.describe(state), flush=True)
            if state.get("bigquery"):
                env["BIGQUERY_EMULATOR_HOST"] = state["bigquery"]
        else:
            with psycopg.connect(warehouse_uri) as conn:
                disabled = ops_integrations.disable_sandbox_integrations(conn)
            print(f"PACELINE_SANDBOX=off: no stand-ins; sandbox integrations disabled: {len(disabled)}", flush=True)
        from paceline.ops.localenv import write_env_file

        env_path = write_env_file(env, Path(sys.executable).parent)

        logs = var / "logs"
        logs.mkdir(exist_ok=True)
        for name in AIRFLOW_PROCESSES:
            args = [name, "--host", env["AIRFLOW__API__HOST"], "--port", str(port)] if name == "api-server" else [name]
            log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child process
            airflow = str(Path(sys.executable).with_name("airflow"))
            # Own process group: stopping it also stops what it spawned (serve-logs, task runners).
            process = subprocess.Popen(  # noqa: S603
                [airflow, *args], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            processes.append((name, process))
        ui = f"http://{_reachable(env['AIRFLOW__API__HOST'])}:{port}"
        health = f"{ui}/api/v2/monitor/health"
        if not _wait_healthy(health, 180):
            print(f"Airflow did not become healthy; see {logs}", file=sys.stderr)
            return 1
        _airflow(env, "dags", "reserialize", check=False)
        unpaused = dag_ids(env)
        if unpaused:
            pattern = "^(" + "|".join(unpaused) + ")$"
            _airflow(env, "dags", "unpause", "--treat-dag-id-as-regex", "-y", pattern, check=False)
        print(f"unpaused DAGs: {', '.join(unpaused) or '(none found: check the dag-processor log)'}", flush=True)
        print(f"settings for other terminals: source {env_path}  (then airflow ..., paceline status)", flush=True)
        password = json.loads(Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text())[ADMIN_USER]
        print(
            "\nPaceline is up.\n"
            f"  Airflow UI:   {ui}  (login {ADMIN_USER} / {password})\n"
            f"  health:       {health}\n"
            f"  warehouse:    postgresql://{WAREHOUSE_ROLE}@{LOOPBACK}:{pg_port}/{WAREHOUSE_DB}"
            f"  (password in {var / WAREHOUSE_PASSWORD_FILE})\n"
            f"  logs:         {logs}\n"
            "Ctrl+C stops everything; `make run` again resumes with the data kept.",
            flush=True,
        )
        while not stopping:
            for name, process in processes:
                if process.poll() is not None:
                    print(f"airflow {name} exited with {process.returncode}; see {logs / (name + '.log')}", file=sys.stderr)
                    return 1
            time.sleep(1)
        return 0
    finally:
        print("stopping...", flush=True)
        sessions = {process.pid for _, process in processes}
        _signal_sessions(sessions, signal.SIGTERM)
        for _, process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        # Task processes put themselves in process groups of their own inside our sessions.
        _signal_sessions(sessions, signal.SIGKILL)
        try:
            from paceline.sandbox import manager

            manager.down()
        except Exception as exc:  # stopping must go on whatever failed
            print(f"sandbox stop: {exc}", file=sys.stderr)
        pg.stop()
        lock_handle.close()
