"""Benchmark: nba_player_game_summary's 60-day backfill beside Airflow's floor, in one go.

Starts one stack in a temporary folder (the BigQuery emulator with the full seed, an embedded
PostgreSQL, Airflow 3 with the LocalExecutor and all four processes, the pools of
config/pools.json) holding two DAGs:

- ``nba_player_game_summary``, the real one (one task a day: build, then the gate);
- ``nba_floor`` (and ``nba_floor_again``): the floor the goal was set against, the DAG's shape when
  the goal was written (two tasks a day, build then gate, the XCom between them, the Asset outlet
  with a ``bigquery://`` URI and its event, the ``bigquery`` pool, the same timetable and retries)
  with tasks that do nothing: what Airflow itself costs for a gated day in two tasks;
- ``nba_floor_one_task`` (and ``..._again``): the same with the DAG's present shape, one task a day
  with the outlet: what Airflow costs for one task a day, Paceline's own overhead measured alone.

Then runs ``airflow backfill create --max-active-runs 15`` over the same days for both floors, for
Paceline, and for both floors again (the two figures of each bracket the load), and prints each
wall time (first run start -> last run end), task durations, the emulator's CPU, and Paceline's
wall time over each mean floor (goal: at most 1.2 over the two-task floor).

    .venv/bin/python bench/nba_floor.py                 # 60 days from 2022-01-03, 15 wide
    .venv/bin/python bench/nba_floor.py --days 20 --no-second-floor
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))
sys.path.insert(0, str(ROOT / "bench"))

from nba_backfill import (  # noqa: E402  (bench/nba_backfill.py: the same stack)
    AIRFLOW_PROCESSES,
    BACKFILL_RUNS,
    TASKS,
    airflow,
    airflow_env,
    fmt,
    healthy,
    log,
    seconds,
    wait_for,
)

from paceline.db.embedded import EmbeddedPostgres, free_port  # noqa: E402
from paceline.nba import DAG_ID  # noqa: E402
from paceline.sandbox import bigquery as sb  # noqa: E402

TWO_TASK_FLOORS = ("nba_floor", "nba_floor_again")  # one DAG per backfill: each needs runs of its own
ONE_TASK_FLOORS = ("nba_floor_one_task", "nba_floor_one_task_again")
FLOOR_DAG_IDS = TWO_TASK_FLOORS + ONE_TASK_FLOORS
FLOOR_HEAD = '''"""DAG_ID: DOC (bench/nba_floor.py)."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, task

from paceline.dag_defaults import DEFAULT_ARGS

FLOOR = Asset(name="DAG_ID", uri="bigquery://paceline/nba_analytics/DAG_ID")

with DAG(
    dag_id="DAG_ID",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=dt.datetime(2021, 10, 1, tzinfo=dt.UTC),
    catchup=False,
    default_args={**DEFAULT_ARGS, "retries": 2, "pool": "bigquery"},
) as dag:
'''
TWO_TASK_FLOOR = FLOOR_HEAD.replace("DOC", "a gated day in two tasks that do nothing") + '''
    @task
    def transform_day(data_interval_start: dt.datetime | None = None, dag_run=None) -> dict:
        return {"game_date": data_interval_start.date().isoformat(), "days": [], "rows_written": {}}

    @task(outlets=[FLOOR])
    def check_day(built: dict, outlet_events=None) -> dict:
        outlet_events[FLOOR].extra = built
        return built

    check_day(transform_day())
'''
ONE_TASK_FLOOR = FLOOR_HEAD.replace("DOC", "nba_player_game_summary's shape, one task a day that does nothing") + '''
    @task(outlets=[FLOOR])
    def build_and_check_day(data_interval_start: dt.datetime | None = None, dag_run=None,
                            outlet_events=None) -> dict:
        figures = {"game_date": data_interval_start.date().isoformat(), "days": [], "rows_written": {}}
        outlet_events[FLOOR].extra = figures
        return figures

    build_and_check_day()
'''
MERGE_MARK = "MERGE nba_analytics.player_game_summary AS t"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (the emulator: BigQuery's own work, off-machine in production)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def backfill(env: dict[str, str], airflow_db: str, emulator_pid: int, dag_id: str, start: dt.date, end: dt.date,
             days: int, width: int, timeout: float) -> dict:
    """Run one backfill to the end; its runs, tasks and wall times."""
    load_before = load_average()
    emulator_cpu = cpu_seconds(emulator_pid)
    t0 = time.monotonic()
    airflow(env, "backfill", "create", "--dag-id", dag_id, "--from-date", start.isoformat(),
            "--to-date", end.isoformat(), "--max-active-runs", str(width))

    def finished() -> bool:
        with psycopg.connect(airflow_db) as conn:
            runs = conn.execute(BACKFILL_RUNS, (dag_id,)).fetchall()
        done = [r for r in runs if r[2] in ("success", "failed")]
        log(f"  {dag_id}: {len(done)}/{len(runs)} backfill runs finished (load {load_average()})")
        return len(runs) == days and len(done) == len(runs)

    wait_for(f"the {dag_id} backfill", finished, timeout, interval=5)
    command_wall = time.monotonic() - t0
    emulator_cpu = cpu_seconds(emulator_pid) - emulator_cpu
    with psycopg.connect(airflow_db) as conn:
        runs = conn.execute(BACKFILL_RUNS, (dag_id,)).fetchall()
        tasks = conn.execute(TASKS, (dag_id,)).fetchall()
    wall = seconds(min(r[4] for r in runs if r[4]), max(r[5] for r in runs if r[5]))
    by_task: dict[str, list[float]] = {}
    for _run, task_id, _state, begin, stop, _try in tasks:
        by_task.setdefault(task_id, []).append(seconds(begin, stop))
    return {
        "dag_id": dag_id, "runs": len(runs), "success": sum(r[2] == "success" for r in runs),
        "retries": sum(1 for t in tasks if t[5] and t[5] > 1), "wall": wall, "command_wall": command_wall,
        "by_task": by_task, "load_before": load_before, "load_after": load_average(), "emulator_cpu": emulator_cpu,
        "queued": [seconds(r[3], r[4]) for r in runs], "duration": [seconds(r[4], r[5]) for r in runs],
    }


def statement_seconds(client, since: dt.datetime) -> tuple[list[float], list[float]]:
    """Durations of the MERGE jobs and of the other jobs (guard, gate, set-up look-ups) since ``since``."""
    merges: dict[str, float] = {}
    others: dict[str, float] = {}
    for job in client.list_jobs(min_creation_time=since, all_users=True):
        if job.started and job.ended:
            kind = merges if MERGE_MARK in (getattr(job, "query", "") or "") else others
            kind[job.job_id] = seconds(job.started, job.ended)
    return list(merges.values()), list(others.values())


def show(result: dict) -> None:
    print(f"--- {result['dag_id']}: {result['success']}/{result['runs']} runs success, "
          f"{result['retries']} task retries; load average before {result['load_before']}, "
          f"after {result['load_after']}")
    print(f"    wall (first run start -> last run end): {result['wall']:.1f}s; "
          f"`backfill create` to done: {result['command_wall']:.1f}s")
    print(f"    run duration: {fmt(result['duration'])}; emulator CPU {result['emulator_cpu']:.1f}s")
    for task_id, values in sorted(result["by_task"].items()):
        print(f"    task {task_id}: {fmt(values)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2022, 1, 3))
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--max-active-runs", type=int, default=15)
    parser.add_argument("--no-second-floor", action="store_true", help="run the floor once, before Paceline")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    # a SIGTERM (timeout, kill) still stops the stack below: Python's default would skip `finally`
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    end = args.start + dt.timedelta(days=args.days - 1)
    tmp = Path(tempfile.mkdtemp(prefix="paceline-nba-floor-"))
    processes: list[subprocess.Popen] = []
    emulator = pg = None
    try:
        log(f"folder {tmp}; cores {os.cpu_count()}; load average {load_average()}")
        emulator = sb.start_emulator(tmp / "bigquery")
        client = emulator.client()
        stats = sb.seed_scale(client, "seed")
        log(f"emulator seeded: {stats.game_days} game days, {stats.box_rows} box rows in {stats.seconds:.1f}s")
        pg = EmbeddedPostgres(tmp / "pg", free_port()).start()
        pg.ensure_database("airflow")
        dags = tmp / "dags"
        dags.mkdir()
        (dags / "nba_player_game_summary.py").symlink_to(ROOT / "dags" / "nba_player_game_summary.py")
        for floor_id in TWO_TASK_FLOORS:
            (dags / f"{floor_id}.py").write_text(TWO_TASK_FLOOR.replace("DAG_ID", floor_id))
        for floor_id in ONE_TASK_FLOORS:
            (dags / f"{floor_id}.py").write_text(ONE_TASK_FLOOR.replace("DAG_ID", floor_id))
        api_port = free_port()
        env = airflow_env(tmp / "airflow", dags, pg.port, api_port, emulator)
        airflow(env, "db", "migrate")
        airflow(env, "pools", "import", str(ROOT / "config" / "pools.json"))
        for name in AIRFLOW_PROCESSES:
            with open(tmp / f"{name}.log", "wb") as out:
                processes.append(subprocess.Popen(  # noqa: S603
                    [str(Path(sys.executable).with_name("airflow")), *name.split()],
                    env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                ))
        wait_for("the api-server", lambda: healthy(f"http://127.0.0.1:{api_port}/api/v2/monitor/health"), 120)
        airflow_db = pg.uri("airflow")

        def parsed() -> bool:
            with psycopg.connect(airflow_db) as conn:
                found = conn.execute("SELECT count(*) FROM dag WHERE dag_id = ANY(%s)",
                                     ([DAG_ID, *FLOOR_DAG_IDS],)).fetchone()[0]
            return found == 1 + len(FLOOR_DAG_IDS)

        wait_for("both DAGs to be parsed", parsed, 180)
        for dag_id in (DAG_ID, *FLOOR_DAG_IDS):
            airflow(env, "dags", "unpause", dag_id)
        log(f"Airflow up; backfills of {args.start}..{end} ({args.days} days), {args.max_active_runs} wide")

        common = (args.start, end, args.days, args.max_active_runs, args.timeout)
        floor = [backfill(env, airflow_db, emulator.pid, TWO_TASK_FLOORS[0], *common)]
        one_task = [backfill(env, airflow_db, emulator.pid, ONE_TASK_FLOORS[0], *common)]
        since = dt.datetime.now(dt.UTC)
        paceline = backfill(env, airflow_db, emulator.pid, DAG_ID, *common)
        merges, others = statement_seconds(client, since)
        if not args.no_second_floor:
            floor.append(backfill(env, airflow_db, emulator.pid, TWO_TASK_FLOORS[1], *common))
            one_task.append(backfill(env, airflow_db, emulator.pid, ONE_TASK_FLOORS[1], *common))

        print()
        print(f"=== nba_player_game_summary vs Airflow's floor: {args.start}..{end}, {args.days} runs, "
              f"--max-active-runs {args.max_active_runs}, {os.cpu_count()} cores (shared machine) ===")
        for result in (floor[0], one_task[0], paceline, *floor[1:], *one_task[1:]):
            show(result)
        floor_wall = sum(f["wall"] for f in floor) / len(floor)
        one_task_wall = sum(f["wall"] for f in one_task) / len(one_task)
        ratio = paceline["wall"] / floor_wall
        partial = " (partial: the emulator lists at most 100 jobs)" if len(merges) + len(others) >= 100 else ""
        print(f"MERGE statements: {len(merges)} jobs, sum {sum(merges):.1f}s; other jobs (guard, gate): "
              f"{len(others)}, sum {sum(others):.1f}s{partial}")
        walls = " and ".join(f"{f['wall']:.1f}s" for f in floor)
        print(f"two-task floor wall: {walls} (mean {floor_wall:.1f}s)")
        walls = " and ".join(f"{f['wall']:.1f}s" for f in one_task)
        print(f"one-task floor wall: {walls} (mean {one_task_wall:.1f}s)")
        print(f"Paceline / two-task floor = {paceline['wall']:.1f}s / {floor_wall:.1f}s = {ratio:.2f} (goal <= 1.2)")
        print(f"Paceline / one-task floor = {paceline['wall']:.1f}s / {one_task_wall:.1f}s = "
              f"{paceline['wall'] / one_task_wall:.2f} (Paceline's own overhead, the shape held equal)")
        # The emulator runs BigQuery's statements on this machine's cores; on BigQuery they run
        # elsewhere. Its CPU over the cores is a lower bound of the wall time it took from Airflow.
        cores = os.cpu_count() or 1
        net = paceline["wall"] - paceline["emulator_cpu"] / cores
        print(f"without the emulator's CPU ({paceline['emulator_cpu']:.1f}s / {cores} cores): "
              f"{net:.1f}s / {floor_wall:.1f}s = {net / floor_wall:.2f}, over the one-task floor "
              f"{net / one_task_wall:.2f} (estimates of the ratios against BigQuery)")
        print(json.dumps({"paceline_wall_s": round(paceline["wall"], 1),
                          "floor_wall_s": [round(f["wall"], 1) for f in floor],
                          "one_task_floor_wall_s": [round(f["wall"], 1) for f in one_task],
                          "ratio": round(ratio, 3), "ratio_one_task": round(paceline["wall"] / one_task_wall, 3),
                          "ratio_without_emulator_cpu": round(net / floor_wall, 3),
                          "ratio_one_task_without_emulator_cpu": round(net / one_task_wall, 3),
                          "emulator_cpu_s": round(paceline["emulator_cpu"], 1), "merge_sum_s": round(sum(merges), 1)}))
        ok = paceline["success"] == paceline["runs"] and all(f["success"] == f["runs"] for f in floor + one_task)
        return 0 if ok else 1
    finally:
        for process in reversed(processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        if pg is not None:
            pg.stop()
        if emulator is not None:
            emulator.stop()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
