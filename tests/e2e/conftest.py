"""The end-to-end stack: `python -m paceline run` (what `make run` starts), shared by every e2e module.

One stack serves the whole session (starting Airflow costs about a minute on two cores);
`test_zz_shutdown.py`, collected last, stops it with Ctrl+C and checks that nothing is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from paceline.db.embedded import free_port


@dataclass
class Stack:
    process: subprocess.Popen[str]
    env: dict[str, str]
    var: Path
    api: str
    pg_port: int
    output: list[str]

    def airflow(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        airflow_env = {**self.env, **_airflow_env_of(self)}
        return subprocess.run(
            [str(Path(sys.executable).with_name("airflow")), *args],
            env=airflow_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def dsn(self, database: str = "paceline", user: str = "paceline") -> str:
        """A libpq URI with the password `paceline run` generated for `user` (the warehouse role or postgres)."""
        from urllib.parse import quote

        from paceline import local_stack

        name = local_stack.WAREHOUSE_PASSWORD_FILE if user == local_stack.WAREHOUSE_ROLE else local_stack.SUPERUSER_PASSWORD_FILE
        password = (self.var / name).read_text().strip()
        return f"postgresql://{user}:{quote(password, safe='')}@127.0.0.1:{self.pg_port}/{database}"

    def token(self) -> str:
        password = json.loads((self.var / "airflow" / "simple_auth_manager_passwords.json").read_text())["admin"]
        response = requests.post(f"{self.api}/auth/token", json={"username": "admin", "password": password}, timeout=30)
        response.raise_for_status()
        return response.json()["access_token"]

    def get(self, path: str, **params: object) -> dict:
        response = requests.get(
            f"{self.api}/api/v2{path}", params=params, headers={"Authorization": f"Bearer {self.token()}"}, timeout=30
        )
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict) -> dict:
        response = requests.post(
            f"{self.api}/api/v2{path}", json=body, headers={"Authorization": f"Bearer {self.token()}"}, timeout=30
        )
        assert response.ok, response.text
        return response.json()

    def wait_for_runs(self, dag_id: str, count: int, run_type: str, timeout: float = 420) -> list[dict]:
        """Wait until `count` runs of `run_type` have finished; return those runs."""
        deadline = time.monotonic() + timeout
        runs: list[dict] = []
        while time.monotonic() < deadline:
            runs = [r for r in self.get(f"/dags/{dag_id}/dagRuns", limit=100)["dag_runs"] if r["run_type"] == run_type]
            finished = [r for r in runs if r["state"] in ("success", "failed")]
            if len(finished) >= count:
                return runs
            time.sleep(3)
        raise AssertionError(f"{dag_id}: {count} runs not finished in {timeout}s: {[(r['dag_run_id'], r['state']) for r in runs]}")


def _airflow_env_of(stack: Stack) -> dict[str, str]:
    from paceline import local_stack

    os.environ["PACELINE_VAR_DIR"] = str(stack.var)
    try:
        env = local_stack.airflow_env(stack.pg_port, int(stack.api.rsplit(":", 1)[1]))
    finally:
        os.environ.pop("PACELINE_VAR_DIR", None)
    state = json.loads((stack.var / "sandbox" / "state.json").read_text())
    if state.get("bigquery"):
        env["BIGQUERY_EMULATOR_HOST"] = state["bigquery"]
    return {k: v for k, v in env.items() if k.startswith(("AIRFLOW", "BIGQUERY", "PACELINE"))}


def _clean_env(var: Path, pg_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PACELINE", "BIGQUERY"))}
    env.update({"PACELINE_VAR_DIR": str(var), "PACELINE_PG_PORT": str(pg_port)})
    return env


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    # Not under pytest's tmp_path: every pytest session that starts (another engineer's, or a second
    # terminal's) resets /tmp/pytest-of-<user> to 700, and as root the server's own account then
    # loses its data folder (PANIC at the next checkpoint).
    var = Path(tempfile.mkdtemp(prefix="paceline-e2e-"))
    pg_port, api_port = free_port(), free_port()
    env = _clean_env(var, pg_port)
    process = subprocess.Popen(
        [sys.executable, "-m", "paceline", "run", "--port", str(api_port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    deadline = time.monotonic() + 400
    assert process.stdout is not None
    os.set_blocking(process.stdout.fileno(), False)
    up = False
    while time.monotonic() < deadline and process.poll() is None:
        line = process.stdout.readline()
        if not line:
            time.sleep(0.5)
            continue
        output.append(line)
        if "Ctrl+C stops everything" in line:
            up = True
            break
    if not up:
        process.kill()
        pytest.fail("`paceline run` did not come up:\n" + "".join(output[-60:]))
    stack = Stack(process, env, var, f"http://127.0.0.1:{api_port}", pg_port, output)
    yield stack
    if process.poll() is None:  # the last test stops it; this is for a run cut short
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    if process.returncode == 0:  # kept after a failure: its logs/ and postgres.log tell why
        shutil.rmtree(var, ignore_errors=True)


