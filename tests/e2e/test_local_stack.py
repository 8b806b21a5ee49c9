"""End to end on the real thing: `python -m paceline run` (what `make run` starts), then runs through
the real scheduler, a backfill through `airflow backfill create`, and Ctrl+C.

One stack serves the whole module: starting Airflow costs about a minute on two cores.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import requests

from paceline.db.embedded import free_port

CONTRACT_DAGS = {
    "runsignup_sync",
    "haku_sync",
    "haku_backfill",
    "nba_player_game_summary",
    "racing_masters",
    "racing_events",
    "racing_daily",
}


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


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    var = tmp_path_factory.mktemp("stack")
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


def test_health_and_every_dag_listed_and_unpaused(stack: Stack) -> None:
    health = requests.get(f"{stack.api}/api/v2/monitor/health", timeout=30).json()
    for component in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
        assert health[component]["status"] == "healthy", health
    dags = {d["dag_id"]: d for d in stack.get("/dags", limit=100)["dags"]}
    assert CONTRACT_DAGS <= set(dags)
    assert not [d for d in CONTRACT_DAGS if dags[d]["is_paused"]]
    pools = {p["name"] for p in stack.get("/pools")["pools"]}
    assert {"runsignup_api", "haku_api", "haku_backfill_large", "racing_api"} <= pools


def test_a_second_instance_fails_clearly(stack: Stack) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "paceline", "run", "--port", str(free_port())],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 2
    assert "already running" in second.stderr
    assert requests.get(f"{stack.api}/api/v2/monitor/health", timeout=30).ok


def test_nba_backfill_creates_one_run_per_day_and_fills_each_partition(stack: Stack) -> None:
    created = stack.airflow(
        "backfill", "create", "--dag-id", "nba_player_game_summary",
        "--from-date", "2022-02-10", "--to-date", "2022-02-12", "--max-active-runs", "3",
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr
    runs = stack.wait_for_runs("nba_player_game_summary", 3, "backfill")
    days = sorted(r["data_interval_start"][:10] for r in runs)
    assert days == ["2022-02-10", "2022-02-11", "2022-02-12"]
    assert {r["state"] for r in runs} == {"success"}, runs
    from paceline.sandbox.bigquery import make_client

    state = json.loads((stack.var / "sandbox" / "state.json").read_text())
    client = make_client(state["bigquery"])
    rows = client.query(
        "SELECT CAST(game_date AS STRING) AS d, COUNT(*) AS n FROM nba_analytics.player_game_summary "
        "WHERE game_date BETWEEN '2022-02-10' AND '2022-02-12' GROUP BY 1 ORDER BY 1"
    ).result()
    filled = {row["d"]: row["n"] for row in rows}
    raw = client.query(
        "SELECT CAST(game_date AS STRING) AS d, COUNT(*) AS n FROM nba_raw.box_player "
        "WHERE game_date BETWEEN '2022-02-10' AND '2022-02-12' GROUP BY 1 ORDER BY 1"
    ).result()
    assert filled == {row["d"]: row["n"] for row in raw}


def test_runsignup_sync_through_the_scheduler_and_no_secret_in_task_logs(stack: Stack) -> None:
    stack.post("/dags/runsignup_sync/dagRuns", {"logical_date": None, "conf": {"due_only": False}})
    manual = stack.wait_for_runs("runsignup_sync", 1, "manual")
    assert manual and manual[0]["state"] == "success", manual
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{stack.pg_port}/paceline") as conn:
        participants = conn.execute("SELECT count(*) FROM registrations.runsignup_participants").fetchone()[0]
        audited = conn.execute("SELECT count(*) FROM paceline.sync_audit WHERE provider = 'runsignup'").fetchone()[0]
    assert participants > 1000 and audited > 0
    state = json.loads((stack.var / "sandbox" / "state.json").read_text())
    secrets = [i["password"] for i in state["integrations"]] + [i["login"] for i in state["integrations"]]
    logs = list((stack.var / "airflow" / "logs").rglob("*.log")) + list((stack.var / "logs").glob("*.log"))
    assert logs
    leaked = {
        path.name: secret
        for path in logs
        for secret in secrets
        if re.search(re.escape(secret), path.read_text(errors="replace"))
    }
    assert not leaked, f"credentials found in logs: {leaked}"


def test_racing_month_backfill_maps_over_its_days(stack: Stack) -> None:
    created = stack.airflow(
        "backfill", "create", "--dag-id", "racing_events",
        "--from-date", "2024-01-01", "--to-date", "2024-01-02", "--max-active-runs", "1",
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr
    (run,) = stack.wait_for_runs("racing_events", 1, "backfill", timeout=600)
    assert run["state"] == "success", run
    assert (run["data_interval_start"][:10], run["data_interval_end"][:10]) == ("2024-01-01", "2024-02-01")
    tasks = stack.get(f"/dags/racing_events/dagRuns/{run['dag_run_id']}/taskInstances", limit=100)["task_instances"]
    days = [t for t in tasks if t["task_id"] == "load_day"]
    assert len(days) == 31 and {t["state"] for t in days} == {"success"}
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{stack.pg_port}/paceline") as conn:
        loaded_days, races, runners = conn.execute(
            "SELECT count(DISTINCT r.race_date), count(DISTINCT r.race_id), count(u.*) FROM racing.ra_races r "
            "LEFT JOIN racing.ra_runners u USING (race_id) WHERE r.race_date BETWEEN '2024-01-01' AND '2024-01-31'"
        ).fetchone()
    assert loaded_days >= 25 and races > 50 and runners > races


def test_haku_backfill_takes_each_credentials_small_events_before_its_large_ones(stack: Stack) -> None:
    # tp3 in the small sandbox within 30 days: Harbor Lights 5K (5) and Pacific Coast 10K (60), large
    # at a threshold of 40. Only tp3: the scheduled haku_sync spends tp2's real 500/hour quota.
    today = dt.date.today()
    conf = {"start_date": (today - dt.timedelta(days=30)).isoformat(), "integration_id": "haku-tp3",
            "end_date": (today + dt.timedelta(days=30)).isoformat(), "large_threshold": 40}
    stack.post("/dags/haku_backfill/dagRuns", {"logical_date": None, "conf": conf})
    (run,) = stack.wait_for_runs("haku_backfill", 1, "manual")
    assert run["state"] == "success", run
    tasks = stack.get(f"/dags/haku_backfill/dagRuns/{run['dag_run_id']}/taskInstances", limit=100)["task_instances"]
    by_task = {t["task_id"]: [] for t in tasks}
    for t in tasks:
        by_task[t["task_id"]].append(t)
    assert {t["state"] for t in by_task["sync_small"] + by_task["sync_large"]} == {"success"}
    assert [t["rendered_map_index"].split()[0] for t in by_task["sync_large"]] == ["tp3"]
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{stack.pg_port}/paceline") as conn:
        rows = conn.execute(
            "SELECT timing_partner_id, estimated_size, actual_size, started_at, finished_at FROM paceline.sync_audit "
            "WHERE sync_type = 'backfill' AND run_id = %s ORDER BY started_at", (run["dag_run_id"],)
        ).fetchall()
    assert sorted((r[0], r[1]) for r in rows) == [(3, 5), (3, 60)]
    assert all(r[1] == r[2] for r in rows)  # estimated = actual
    (large,) = [r for r in rows if r[1] > 40]
    # tp3's large event started after tp3's small one had finished
    assert large[3] >= max(r[4] for r in rows if r[0] == 3 and r[1] <= 40)


def test_ctrl_c_stops_every_process_it_started(stack: Stack) -> None:
    import psutil

    def ours() -> list[str]:
        found = []
        for proc in psutil.process_iter(["pid", "cmdline", "environ"]):
            try:
                cmdline = " ".join(proc.info["cmdline"] or [])
                environ = proc.info["environ"] or {}
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if proc.pid != stack.process.pid and (
                str(stack.var) in cmdline or environ.get("PACELINE_VAR_DIR") == str(stack.var)
            ):
                found.append(f"{proc.pid} {cmdline[:120]}")
        return found

    def in_sessions(sessions: set[int]) -> list[str]:
        found = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if os.getsid(proc.pid) in sessions:
                    found.append(f"{proc.pid} {' '.join(proc.info['cmdline'] or [])[:120]}")
            except (ProcessLookupError, PermissionError, OSError):
                continue
        return found

    before = ours()
    assert before, "the stack's processes should be visible before Ctrl+C"
    # Task processes may hide their environment; the sessions the stack's processes run in catch them.
    sessions = {os.getsid(int(line.split()[0])) for line in before} - {os.getsid(0)}
    stack.process.send_signal(signal.SIGINT)
    assert stack.process.wait(timeout=120) == 0
    deadline = time.monotonic() + 30
    while (ours() or in_sessions(sessions)) and time.monotonic() < deadline:
        time.sleep(1)
    assert not ours()
    assert not in_sessions(sessions)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{stack.api}/api/v2/monitor/health", timeout=5)
