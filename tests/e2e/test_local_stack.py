"""End to end on the real thing: runs through the real scheduler and a backfill through
`airflow backfill create`, on the session's stack (tests/e2e/conftest.py)."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys

import psycopg
import requests

from paceline.db.embedded import free_port
from tests.contract import CONTRACT_DAG_IDS as CONTRACT_DAGS
from tests.e2e.conftest import Stack


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
    with psycopg.connect(stack.dsn()) as conn:
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
    with psycopg.connect(stack.dsn()) as conn:
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
    with psycopg.connect(stack.dsn()) as conn:
        rows = conn.execute(
            "SELECT timing_partner_id, estimated_size, actual_size, started_at, finished_at FROM paceline.sync_audit "
            "WHERE sync_type = 'backfill' AND run_id = %s ORDER BY started_at", (run["dag_run_id"],)
        ).fetchall()
    assert sorted((r[0], r[1]) for r in rows) == [(3, 5), (3, 60)]
    assert all(r[1] == r[2] for r in rows)  # estimated = actual
    (large,) = [r for r in rows if r[1] > 40]
    # tp3's large event started after tp3's small one had finished
    assert large[3] >= max(r[4] for r in rows if r[0] == 3 and r[1] <= 40)
