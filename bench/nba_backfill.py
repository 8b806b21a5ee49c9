"""Benchmark: a 60-day backfill of nba_player_game_summary with 15 concurrent runs, on the emulator.

Starts, in a temporary folder: the BigQuery emulator (seeded with NBA raw data), an embedded
PostgreSQL for Airflow's metadata, and Airflow 3 itself (api-server, scheduler, dag-processor,
triggerer; LocalExecutor) with only the nba_player_game_summary DAG. Then runs what an operator
runs: ``airflow dags unpause`` and ``airflow backfill create --from-date … --to-date …
--max-active-runs 15``, and waits for every backfill run to finish.

Prints:
- wall time of the backfill beside the ideal: the sum of the per-day MERGE statement times (from
  the emulator's job records) divided by 15, i.e. what 15 perfectly packed slots would need; the
  difference, spread over the runs, is Airflow's own overhead per run (scheduling, task start-up,
  the quality check), shown in slot-seconds;
- per run: duration, transform and check task durations, queue latency;
- reads per day: rows in the day's raw partitions against the raw tables' totals (what the day's
  statement selects), and BigQuery's totalBytesProcessed (the emulator reports 0; against real
  BigQuery it is the figure that proves partition pruning).

    .venv/bin/python bench/nba_backfill.py                       # 60 days from 2022-01-03, full seed
    .venv/bin/python bench/nba_backfill.py --days 20 --history window
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))

from paceline.db.embedded import EmbeddedPostgres, free_port  # noqa: E402
from paceline.nba import DAG_ID  # noqa: E402
from paceline.sandbox import bigquery as sb  # noqa: E402

AIRFLOW_PROCESSES = ("api-server", "scheduler", "dag-processor", "triggerer")
BACKFILL_RUNS = """
SELECT run_id, logical_date, state, queued_at, start_date, end_date
FROM dag_run WHERE dag_id = %s AND run_type = 'backfill' ORDER BY logical_date
"""
TASKS = """
SELECT ti.run_id, ti.task_id, ti.state, ti.start_date, ti.end_date, ti.try_number
FROM task_instance ti JOIN dag_run dr ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id
WHERE ti.dag_id = %s AND dr.run_type = 'backfill'
"""
PARTITION_ROWS = """
SELECT 'box' AS t, game_date, COUNT(*) AS n FROM nba_raw.box_player
WHERE game_date BETWEEN @start_date AND @end_date GROUP BY game_date
UNION ALL
SELECT 'pbp' AS t, game_date, COUNT(*) AS n FROM nba_raw.pbp_actions
WHERE game_date BETWEEN @start_date AND @end_date GROUP BY game_date
"""
TABLE_ROWS = """
SELECT
  (SELECT COUNT(*) FROM nba_raw.box_player WHERE game_date IS NOT NULL) AS box,
  (SELECT COUNT(*) FROM nba_raw.pbp_actions WHERE game_date IS NOT NULL) AS pbp
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def airflow_env(home: Path, dags: Path, pg_port: int, api_port: int, emulator: sb.EmulatorProcess) -> dict[str, str]:
    env = dict(os.environ)
    env.update(emulator.env())
    env.update({
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "include"), env.get("PYTHONPATH")])),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__PARALLELISM": "32",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "32",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://postgres@127.0.0.1:{pg_port}/airflow",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API_AUTH__JWT_SECRET": "paceline-nba-bench-jwt-secret-0123456789",
        "AIRFLOW__API__SECRET_KEY": "paceline-nba-bench-secret-key",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
    })
    return env


def airflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    binary = str(Path(sys.executable).with_name("airflow"))
    result = subprocess.run([binary, *args], env=env, capture_output=True, text=True)  # noqa: S603
    if result.returncode != 0:
        raise RuntimeError(f"airflow {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result


def wait_for(what: str, predicate, timeout: float, interval: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def healthy(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
        return response.status == 200


def seconds(a: dt.datetime | None, b: dt.datetime | None) -> float | None:
    return (b - a).total_seconds() if a and b else None


def fmt(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    return (f"mean {statistics.mean(values):.2f}s  median {statistics.median(values):.2f}s  "
            f"min {min(values):.2f}s  max {max(values):.2f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2022, 1, 3))
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--max-active-runs", type=int, default=15)
    parser.add_argument("--history", choices=("seed", "window"), default="seed",
                        help="seed: the whole 2021-10..2024-05 history (reads per day vs big tables); "
                             "window: only the backfilled days")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    # a SIGTERM (timeout, kill) still stops the stack below: Python's default would skip `finally`
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    end = args.start + dt.timedelta(days=args.days - 1)
    tmp = Path(tempfile.mkdtemp(prefix="paceline-nba-bench-"))
    processes: list[subprocess.Popen] = []
    emulator = pg = None
    try:
        log(f"folder {tmp}")
        emulator = sb.start_emulator(tmp / "bigquery")
        client = emulator.client()
        stats = (sb.seed_scale(client, "seed") if args.history == "seed"
                 else sb.seed_nba(client, args.start, end))
        log(f"emulator {emulator.url}; seeded {stats.game_days} game days, {stats.box_rows} box rows, "
            f"{stats.pbp_rows} pbp rows in {stats.seconds:.1f}s")

        pg = EmbeddedPostgres(tmp / "pg", free_port()).start()
        pg.ensure_database("airflow")
        dags = tmp / "dags"
        dags.mkdir()
        (dags / "nba_player_game_summary.py").symlink_to(ROOT / "dags" / "nba_player_game_summary.py")
        api_port = free_port()
        env = airflow_env(tmp / "airflow", dags, pg.port, api_port, emulator)
        started = time.monotonic()
        airflow(env, "db", "migrate")
        log(f"airflow db migrate: {time.monotonic() - started:.1f}s")
        airflow(env, "pools", "import", str(ROOT / "config" / "pools.json"))  # the task runs in `bigquery`
        for name in AIRFLOW_PROCESSES:
            with open(tmp / f"{name}.log", "wb") as out:
                processes.append(subprocess.Popen(  # noqa: S603
                    [str(Path(sys.executable).with_name("airflow")), *name.split()],
                    env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                ))
        wait_for("the api-server", lambda: healthy(f"http://127.0.0.1:{api_port}/api/v2/monitor/health"), 120)
        airflow_db = pg.uri("airflow")

        def dag_parsed() -> bool:
            with psycopg.connect(airflow_db) as conn:
                return conn.execute("SELECT 1 FROM dag WHERE dag_id = %s", (DAG_ID,)).fetchone() is not None

        wait_for("the DAG to be parsed", dag_parsed, 180)
        airflow(env, "dags", "unpause", DAG_ID)
        log(f"Airflow up; backfill {args.start}..{end} ({args.days} days), max {args.max_active_runs} runs")

        job_floor = dt.datetime.now(dt.UTC)
        t0 = time.monotonic()
        airflow(env, "backfill", "create", "--dag-id", DAG_ID, "--from-date", args.start.isoformat(),
                "--to-date", end.isoformat(), "--max-active-runs", str(args.max_active_runs))

        def finished() -> bool:
            with psycopg.connect(airflow_db) as conn:
                runs = conn.execute(BACKFILL_RUNS, (DAG_ID,)).fetchall()
            done = [r for r in runs if r[2] in ("success", "failed")]
            log(f"  {len(done)}/{len(runs)} backfill runs finished")
            return len(runs) == args.days and len(done) == len(runs)

        wait_for("the backfill", finished, args.timeout, interval=5)
        command_wall = time.monotonic() - t0

        with psycopg.connect(airflow_db) as conn:
            runs = conn.execute(BACKFILL_RUNS, (DAG_ID,)).fetchall()
            tasks = conn.execute(TASKS, (DAG_ID,)).fetchall()
        report(args, end, client, runs, tasks, job_floor, command_wall)
        gate_ok = range_gate(emulator, args.start, end)
        return 0 if all(r[2] == "success" for r in runs) and gate_ok else 1
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


def range_gate(emulator, start: dt.date, end: dt.date) -> bool:
    """The range gate over the backfilled days, as `paceline nba check` runs it (with the old
    system's 110,000-160,000 rows when the range is 2021-10-01..2024-05-01)."""
    from paceline.nba import quality

    started = time.monotonic()
    try:
        results = quality.check_range(emulator.rest_client(), start, end)
    except quality.DataQualityError as failed:
        print(f"range gate {start}..{end}: FAILED in {time.monotonic() - started:.1f}s\n{failed}")
        return False
    print(f"range gate {start}..{end}: passed in {time.monotonic() - started:.1f}s")
    for result in results:
        print(f"  {result.describe()}")
    return True


def report(args, end, client, runs, tasks, job_floor, command_wall) -> None:
    from google.cloud import bigquery

    n = len(runs)
    failed = [r[0] for r in runs if r[2] != "success"]
    wall = seconds(min(r[4] for r in runs if r[4]), max(r[5] for r in runs if r[5]))
    merges: list[tuple[float | None, int | None]] = []  # (seconds, bytes) of each day's MERGE
    checks = []
    for job in client.list_jobs(min_creation_time=job_floor, all_users=True):
        query = getattr(job, "query", "") or ""
        if not (job.started and job.ended and "nba_analytics.player_game_summary" in query):
            continue
        if "MERGE nba_analytics.player_game_summary AS t" in query:
            merges.append((seconds(job.started, job.ended), job.total_bytes_processed))
        else:  # the gate's queries and the guard before each MERGE
            checks.append(seconds(job.started, job.ended))
    statement_sum = sum(t for t, _ in merges if t)
    # The emulator lists at most 100 jobs: past that, the sum is extrapolated from the jobs listed.
    partial = len(merges) + len(checks) >= 100
    if partial and merges:
        statement_sum = statement_sum / len(merges) * len(runs)
    ideal = statement_sum / args.max_active_runs
    by_task: dict[str, list[float]] = {}
    for _run_id, task_id, _state, start, stop, _try in tasks:
        by_task.setdefault(task_id, []).append(seconds(start, stop))
    retries = sum(1 for t in tasks if t[5] and t[5] > 1)

    print()
    print(f"=== nba_player_game_summary backfill: {args.start}..{end}, {n} runs, "
          f"--max-active-runs {args.max_active_runs} ===")
    print(f"runs: {n - len(failed)} success, {len(failed)} not success {failed[:5]}; task retries: {retries}")
    print(f"wall (first run start -> last run end): {wall:.1f}s; from `backfill create` to done: {command_wall:.1f}s")
    if partial:
        print(f"MERGE statements: {len(merges)} among the last 100 jobs (the emulator lists no more), per day "
              f"{fmt([t for t, _ in merges])}; extrapolated to {n} days: sum {statement_sum:.1f}s")
    else:
        print(f"MERGE statements: {len(merges)} jobs, sum {statement_sum:.1f}s, per day {fmt([t for t, _ in merges])}")
    print(f"guard and quality-check queries: {len(checks)} jobs, sum {sum(checks):.1f}s")
    print(f"ideal (sum of statement times / {args.max_active_runs}): {ideal:.1f}s; wall / ideal = "
          f"{wall / ideal if ideal else float('nan'):.1f}x")
    overhead = (wall - ideal) * args.max_active_runs / n if n else 0.0
    print(f"Airflow overhead per run: {overhead:.1f} slot-seconds "
          f"((wall - ideal) x {args.max_active_runs} / {n} runs)")
    print(f"run duration: {fmt([seconds(r[4], r[5]) for r in runs])}")
    print(f"waiting for a run slot (queued -> running): {fmt([seconds(r[3], r[4]) for r in runs])}")
    for task_id, values in sorted(by_task.items()):
        print(f"task {task_id}: {fmt(values)}")

    config = bigquery.QueryJobConfig(query_parameters=[
        bigquery.ScalarQueryParameter("start_date", "DATE", args.start),
        bigquery.ScalarQueryParameter("end_date", "DATE", end),
    ])
    per_day: dict[dt.date, dict[str, int]] = {}
    for row in client.query(PARTITION_ROWS, job_config=config).result():
        per_day.setdefault(row["game_date"], {})[row["t"]] = row["n"]
    (totals,) = client.query(TABLE_ROWS).result()
    read = [d.get("box", 0) + d.get("pbp", 0) for d in per_day.values()]
    total = totals["box"] + totals["pbp"]
    game_days = len(per_day)
    print(f"reads per day: the day's partitions hold {fmt_rows(read)} raw rows (box + pbp) of {total:,} in the "
          f"raw tables ({(statistics.mean(read) / total if read and total else 0):.3%} per day); "
          f"{args.days - game_days} of {args.days} days have no games")
    bytes_processed = [b for _, b in merges if b is not None]
    if any(bytes_processed):
        print(f"totalBytesProcessed per day: mean {statistics.mean(bytes_processed):,.0f} bytes")
    else:
        print("totalBytesProcessed: 0 for every job (the emulator does not report bytes; DuckDB has no "
              "partitions, it filters). Against BigQuery this line shows the per-day bytes.")
    print(json.dumps({"runs": n, "wall_s": round(wall, 1), "statement_sum_s": round(statement_sum, 1),
                      "ideal_s": round(ideal, 1), "overhead_per_run_slot_s": round(overhead, 2)}))


def fmt_rows(values: list[int]) -> str:
    if not values:
        return "0"
    return f"mean {statistics.mean(values):,.0f} (min {min(values):,}, max {max(values):,})"


if __name__ == "__main__":
    raise SystemExit(main())
