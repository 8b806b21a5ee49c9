"""docker-compose.yaml: the services the README names exist and are wired the way it says.

Docker cannot run on the machines that run this suite, so nothing is started here. When the docker
client with its compose plugin is installed, `docker compose config` validates and resolves the
file (it needs no engine); otherwise PyYAML parses it (anchors and `<<` merges included) and a
small interpolator resolves `${VAR:-default}` the way compose does, so that both paths check the
same resolved model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
POSTGRES_INIT_DIR = REPO_ROOT / "docker" / "postgres-init"
POOLS_FILE = REPO_ROOT / "config" / "pools.json"

# The service names that the README's docker-compose section (docs/docker-compose.md) mentions.
README_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-init",
    "postgres",
    "redis",
    "sandbox",
)
AIRFLOW_SERVICES = tuple(name for name in README_SERVICES if name not in ("postgres", "redis"))
# The services that `docker compose up` starts with no profile given.
DEFAULT_SERVICES = tuple(name for name in README_SERVICES if name != "sandbox")

# Values for the secrets that compose requires (`${VAR:?…}`), so that the file resolves without a
# .env; shell variables take precedence over a developer's .env, so these are what gets checked.
TEST_ENV = {
    "POSTGRES_PASSWORD": "pw-test",
    "AIRFLOW__CORE__FERNET_KEY": "fernet-test",
    "AIRFLOW__API_AUTH__JWT_SECRET": "jwt-test",
    "AIRFLOW__API__SECRET_KEY": "secret-key-test",
    "_AIRFLOW_WWW_USER_PASSWORD": "admin-test",
}

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, with no nested ${ in
# the default: nested ones are resolved first by applying the pattern until nothing matches.
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^${}]*))?\}")
_ESCAPED_DOLLAR = "\x00"


def _compose_plugin() -> str | None:
    """The docker executable when its compose plugin answers, else None."""
    docker = shutil.which("docker")
    if docker is None:
        return None
    try:
        probe = subprocess.run(  # noqa: S603 - fixed argv
            [docker, "compose", "version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return docker if probe.returncode == 0 else None


def _compose_env() -> dict[str, str]:
    return {**os.environ, **TEST_ENV}


def _run_compose(docker: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed argv
        [docker, "compose", "--file", str(COMPOSE_FILE), "--profile", "sandbox", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO_ROOT,
        env=_compose_env(),
    )


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Resolve compose-style variables in one string, as `docker compose config` would."""
    text = value.replace("$$", _ESCAPED_DOLLAR)

    def substitute(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3) or ""
        current = env.get(name)
        missing = current is None or (current == "" and operator is not None and operator.startswith(":"))
        if operator in ("?", ":?") and missing:
            raise KeyError(f"required variable {name} is missing: {argument}")
        if operator in ("-", ":-") and missing:
            return argument
        return current or ""

    while True:
        resolved = _VARIABLE.sub(substitute, text)
        if resolved == text:
            break
        text = resolved
    assert "${" not in text, f"unresolved variable in {value!r}"
    return text.replace(_ESCAPED_DOLLAR, "$")


def _interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(item, env) for key, item in node.items()}
    return node


@cache
def compose_model() -> dict[str, Any]:
    """The resolved compose model: from `docker compose config` if possible, else from PyYAML."""
    docker = _compose_plugin()
    if docker is not None:
        result = _run_compose(docker, "config", "--format", "json")
        assert result.returncode == 0, f"docker compose config failed:\n{result.stderr}"
        return json.loads(result.stdout)
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    # x-* extension fields are only anchors for the services; compose drops them too.
    model = {key: value for key, value in raw.items() if not key.startswith("x-")}
    return _interpolate_tree(model, TEST_ENV)


def services() -> dict[str, dict[str, Any]]:
    return compose_model()["services"]


def environment(service: str) -> dict[str, str]:
    env = services()[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def command(service: str) -> str:
    cmd = services()[service].get("command") or ""
    return cmd if isinstance(cmd, str) else " ".join(cmd)


def mounts(service: str) -> dict[str, tuple[str, bool]]:
    """target -> (source, read_only); bind sources as absolute paths, volumes by name."""
    found: dict[str, tuple[str, bool]] = {}
    for volume in services()[service].get("volumes") or []:
        if isinstance(volume, str):
            parts = volume.split(":")
            source, target = parts[0], parts[1]
            read_only = len(parts) > 2 and "ro" in parts[2].split(",")
        else:
            source, target = volume.get("source", ""), volume["target"]
            read_only = bool(volume.get("read_only"))
        if source.startswith((".", "/")):
            source = str((REPO_ROOT / source).resolve())
        found[target] = (source, read_only)
    return found


def depends_on(service: str) -> dict[str, str]:
    deps = services()[service].get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def required_variables(text: str) -> set[str]:
    return {m.group(1) for m in _VARIABLE.finditer(text.replace("$$", "")) if m.group(2) in ("?", ":?")}


# ---------------------------------------------------------------------------------------------


def test_compose_config_is_valid() -> None:
    docker = _compose_plugin()
    if docker is None:
        pytest.skip("no docker compose plugin here; the other tests parse the file with PyYAML")
    result = _run_compose(docker, "config", "--quiet")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", README_SERVICES)
def test_every_service_the_readme_names_exists(name: str) -> None:
    assert name in services(), f"docker-compose.yaml has no service {name!r}; it has {sorted(services())}"


def test_default_services_start_without_a_profile_and_sandbox_needs_one() -> None:
    for name in DEFAULT_SERVICES:
        assert not services()[name].get("profiles"), f"{name} must start with a plain `docker compose up`"
    assert "sandbox" in (services()["sandbox"].get("profiles") or []), "the sandbox service must be under a profile"


def test_worker_uses_the_celery_executor() -> None:
    env = environment("airflow-worker")
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert "celery worker" in command("airflow-worker")
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:") or "@redis:" in env["AIRFLOW__CELERY__BROKER_URL"]
    for name in AIRFLOW_SERVICES:
        assert environment(name)["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name


def test_worker_can_be_scaled() -> None:
    # `docker compose up --scale airflow-worker=N` fails with a fixed container name or host port.
    worker = services()["airflow-worker"]
    assert "container_name" not in worker
    for port in worker.get("ports") or []:
        published = port.get("published") if isinstance(port, dict) else (str(port).split(":")[0] if ":" in str(port) else None)
        assert not published, f"the worker publishes host port {published}: replicas would collide"


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_code_folders_are_mounted(name: str) -> None:
    env = environment(name)
    found = mounts(name)
    expected = {
        "dags": env["AIRFLOW__CORE__DAGS_FOLDER"],
        "plugins": env["AIRFLOW__CORE__PLUGINS_FOLDER"],
        "include": "/opt/paceline/include",
        "config": "/opt/paceline/config",
    }
    for folder, target in expected.items():
        assert target in found, f"{name}: nothing mounted at {target} (the {folder}/ folder)"
        source, _read_only = found[target]
        assert source == str(REPO_ROOT / folder), f"{name}: {target} mounts {source}, not {folder}/"
        # A missing source would be created empty (and root-owned) by the Docker daemon.
        assert Path(source).is_dir(), f"{folder}/ is missing from the repository"
    # PACELINE_HOME is where paceline.config looks for config/pools.json.
    assert env["PACELINE_HOME"] == "/opt/paceline"


def test_init_migrates_and_imports_the_pools_file() -> None:
    script = command("airflow-init")
    assert "airflow db migrate" in script
    assert "python -m paceline db upgrade" in script
    assert "airflow pools import /opt/paceline/config/pools.json" in script
    assert "airflow users create" in script
    source, _ = mounts("airflow-init")["/opt/paceline/config"]
    pools = json.loads((Path(source) / "pools.json").read_text())
    assert pools, "config/pools.json defines no pool"
    assert all("slots" in spec for spec in pools.values())


@pytest.mark.parametrize("name", [n for n in AIRFLOW_SERVICES if n != "airflow-init"])
def test_services_wait_for_init(name: str) -> None:
    assert depends_on(name).get("airflow-init") == "service_completed_successfully"


def test_airflow_services_share_their_settings() -> None:
    shared = (
        "AIRFLOW__CORE__LOAD_EXAMPLES",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "AIRFLOW_CONN_PACELINE_WAREHOUSE",
    )
    reference = environment("airflow-apiserver")
    for name in AIRFLOW_SERVICES:
        env = environment(name)
        for key in shared:
            assert env.get(key) == reference[key], f"{name}: {key} differs from the api-server's"
    assert reference["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false"
    assert reference["AIRFLOW__API_AUTH__JWT_SECRET"] == TEST_ENV["AIRFLOW__API_AUTH__JWT_SECRET"]
    assert reference["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://airflow-apiserver:")


def test_warehouse_connection_points_at_the_database_the_init_script_creates() -> None:
    conn = json.loads(environment("airflow-worker")["AIRFLOW_CONN_PACELINE_WAREHOUSE"])
    assert conn["conn_type"] == "postgres"
    assert conn["host"] == "postgres"
    assert conn["password"] == TEST_ENV["POSTGRES_PASSWORD"]
    created = set()
    for sql in sorted(POSTGRES_INIT_DIR.glob("*.sql")):
        created |= set(re.findall(r"(?im)^\s*CREATE DATABASE\s+(\w+)", sql.read_text()))
    assert conn["schema"] in created, f"docker/postgres-init creates {created}, not {conn['schema']!r}"
    source, _ = mounts("postgres")["/docker-entrypoint-initdb.d"]
    assert source == str(POSTGRES_INIT_DIR)


def test_sandbox_listens_on_all_interfaces_and_advertises_its_service_name() -> None:
    env = environment("sandbox")
    assert env["PACELINE_SANDBOX_HOST"] == "0.0.0.0"  # noqa: S104 - inside its container, by design
    assert env["PACELINE_SANDBOX_PUBLIC_HOST"] == "sandbox"
    assert "paceline sandbox up --foreground" in command("sandbox")
    # The workers reach the BigQuery emulator through BIGQUERY_EMULATOR_HOST, documented with this port.
    port = env["PACELINE_SANDBOX_PORT_BIGQUERY"]
    assert f"BIGQUERY_EMULATOR_HOST=http://sandbox:{port}" in ENV_EXAMPLE.read_text()


def test_every_variable_is_documented_and_no_secret_is_filled_in() -> None:
    text = COMPOSE_FILE.read_text()
    example = ENV_EXAMPLE.read_text()
    used = {m.group(1) for m in _VARIABLE.finditer(text.replace("$$", ""))}
    undocumented = sorted(name for name in used if name not in example)
    assert not undocumented, f".env.example does not mention {undocumented}"
    for name in required_variables(text):
        line = re.search(rf"(?m)^{re.escape(name)}=(.*)$", example)
        assert line is not None, f".env.example must list the required {name}= line"
        assert line.group(1).strip() == "", f".env.example must not ship a value for the secret {name}"


def test_dockerfile_extends_the_official_image_and_installs_paceline() -> None:
    text = DOCKERFILE.read_text()
    assert "apache/airflow:3.3.2-python3.11" in text
    assert re.search(r"pip install[^\n]*(\\\n[^\n]*)*-c /opt/paceline/constraints\.txt", text)
    assert "pip install --no-cache-dir --no-deps -e /opt/paceline" in text
    stages = set(re.findall(r"(?im)^FROM\s+\S+\s+AS\s+(\S+)", text))
    for name in AIRFLOW_SERVICES:
        build = services()[name].get("build")
        if isinstance(build, dict) and build.get("target"):
            assert build["target"] in stages, f"{name} builds stage {build['target']!r}, not in the Dockerfile"
