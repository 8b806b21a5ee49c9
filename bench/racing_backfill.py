"""Benchmark: a racing_events backfill against The Racing API stand-in, at the real 2 requests/second.

Runs ``paceline.racing.load.load_day`` for every day of N months with W concurrent workers
(threads, each with its own session), all taking their slots from the shared PostgreSQL
limiter, exactly as mapped Airflow tasks do. The stand-in enforces 2 calls/second per
credential with 429s, so any call the limiter lets through too early shows up as a throttle.

Prints: wall time, calls, achieved requests/second over the whole run against the 2/s limit,
requests/second *sustained* (the calls the stand-in received after the first second's burst of
2, over the span from the first arrival to the last, on its own clock), throttles (answered and unanswered), the tightest window of 3
consecutive arrivals at the stand-in (>= 1 s: no second ever held more than 2 calls), calls per
race, and the old approach's wall time for the same days (one sequential call after another with
a 0.5 s sleep after each, results paged by 50, computed from the calls it would make and the
measured call latency). The last two lines are the headline: sustained requests/second and
throttles.

    .venv/bin/python bench/racing_backfill.py --scale seed --months 3 --workers 2
    .venv/bin/python bench/racing_backfill.py --months 1            # a quick run
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from datetime import date, timedelta
from pathlib import Path

from paceline.db.embedded import EmbeddedPostgres, free_port
from paceline.db.migrations import upgrade
from paceline.http.limiter import RateSpec, SharedRateLimiter
from paceline.http.session import RetryPolicy
from paceline.providers.racing_api.client import RacingApiClient, racecards_available
from paceline.providers.racing_api.hook import RacingApiHook
from paceline.racing.coverage import coverage, failures
from paceline.racing.load import load_day
from paceline.sandbox.base import Knobs, serve
from paceline.sandbox.racing_api import build

OLD_SLEEP_S = 0.5  # the old client's sleep after every call
OLD_PAGE = 50  # the old client's results page size
LIMIT_RPS = 2.0


_LOCAL = threading.local()


def _load(day: str, dsn: str, window: float | None) -> dict:
    """One day through load_day, with this thread's (or process's) client on the shared limiter."""
    if not hasattr(_LOCAL, "client"):
        rates = (RateSpec(2, window, exact=True),) if window else None  # the window as given
        limiter = SharedRateLimiter(dsn)
        _LOCAL.client = RacingApiClient(
            RacingApiHook(limiter=limiter, retry=RetryPolicy(throttle_wait_s=1.0), rates=rates)
        )
    return load_day(day, dsn=dsn, client=_LOCAL.client)


def month_start(value: str) -> date:
    year, month = map(int, value.split("-")[:2])
    return date(year, month, 1)


def add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", default="seed", choices=["seed", "small"])
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument(
        "--start", default=None, help="first month YYYY-MM (default: 12 full months before today)"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--processes", action="store_true", help="workers are processes (default: threads)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--window",
        type=float,
        default=None,
        help="limiter window in seconds for 2 calls, taken as is (default: the hook's 2/s with the limiter's margin)",
    )
    args = parser.parse_args(argv)

    today = date.today()
    first = month_start(args.start) if args.start else add_months(date(today.year, today.month, 1), -12)
    stop = add_months(first, args.months)
    days = [
        first + timedelta(days=i) for i in range((stop - first).days) if first + timedelta(days=i) < today
    ]

    tmp = Path(tempfile.mkdtemp(prefix="paceline-bench-"))
    os.environ.setdefault("AIRFLOW_HOME", str(tmp / "airflow"))
    pg = EmbeddedPostgres(tmp / "pg", free_port()).start()
    dsn = pg.ensure_database("bench")
    upgrade(dsn)
    # The stand-in runs in a process of its own, as the API is remote: in this process it would
    # compete with the workers for the GIL and slow the very calls being measured.
    server = StandInProcess(args.scale, args.seed, LIMIT_RPS, warm=(days[0], days[-1]))
    cred = server.credentials[0]
    os.environ["AIRFLOW_CONN_RACING_API"] = json.dumps(
        {"conn_type": "http", "host": server.url, "login": cred["login"], "password": cred["password"]}
    )
    window = args.window

    def one(day: date) -> dict:
        return _load(day.isoformat(), dsn, window)

    executor = ProcessPoolExecutor if args.processes else ThreadPoolExecutor
    pool_kwargs = {"mp_context": multiprocessing.get_context("spawn")} if args.processes else {}

    try:
        print(f"racing backfill: {len(days)} days ({first}..{days[-1]}), scale {args.scale}, "
              f"{args.workers} {'processes' if args.processes else 'threads'}, stand-in limit {LIMIT_RPS:g}/s per credential", file=sys.stderr)  # fmt: skip
        started = time.monotonic()
        summaries: list[dict] = []
        failed: list[tuple[date, str]] = []
        with executor(max_workers=args.workers, **pool_kwargs) as pool:
            if args.processes:  # like Airflow task processes: one limiter client per process
                futures = {pool.submit(_load, d.isoformat(), dsn, window): d for d in days}
            else:
                futures = {pool.submit(one, d): d for d in days}
            for n, future in enumerate(as_completed(futures), start=1):
                try:
                    summaries.append(future.result())
                except Exception as exc:  # reported below; a failed day is what Airflow would retry
                    failed.append((futures[future], f"{exc.__class__.__name__}: {exc}"))
                if n % 30 == 0:
                    elapsed = time.monotonic() - started
                    calls = server.stats()["total_calls"]
                    print(
                        f"  {n}/{len(days)} days, {calls} calls, {calls / elapsed:.2f} req/s", file=sys.stderr
                    )
        wall = time.monotonic() - started
        results_per_day = {date.fromisoformat(s["day"]): s["results"] for s in summaries}
        stats = server.stats()
        calls = stats["total_calls"]
        throttled = sum(stats["throttles"].values())
        arrivals = stats["arrivals"][cred["login"]]
        # After the first second's burst of 2 (any window allows it), the rate held to the last call.
        steady = arrivals["calls"] - int(LIMIT_RPS)
        sustained = steady / arrivals["span_s"] if arrivals["span_s"] and steady > 0 else 0.0
        answer = stats.get("answer_ms") or {}
        ceiling = LIMIT_RPS / (1 + answer["median"] / 1000) if answer.get("median") is not None else None
        races = sum(s["races"] for s in summaries)
        runners = sum(s["runners"] for s in summaries)
        report = coverage(dsn, days[0], days[-1], today=today)

        # Old approach: the same days, one call at a time, 0.5 s sleep after each, results by 50.
        latency = measure_latency(server.url, cred, days, sessions=args.scale)
        old_calls = 0
        for d in days:
            if racecards_available(d, today):
                old_calls += 1
            old_calls += max(1, math.ceil(results_per_day.get(d, 0) / OLD_PAGE))
        write_s = sum(s["write_s"] for s in summaries)  # parse + upsert, sequential in the old system
        old_wall = old_calls * (OLD_SLEEP_S + latency) + write_s

        figures = {
            "days": len(days),
            "days_failed": len(failed),
            "workers": f"{args.workers} {'processes' if args.processes else 'threads'}",
            "wall_s": round(wall, 1),
            "calls": calls,
            "calls_answered_200": calls - throttled,
            "achieved_rps": round(calls / wall, 3),
            "achieved_rps_useful": round((calls - throttled) / wall, 3),
            "limit_rps": LIMIT_RPS,
            "utilisation": round(calls / wall / LIMIT_RPS, 3),
            "tightest_3_call_window_s": arrivals["tightest_window_s"],
            "median_3_call_window_s": arrivals["median_window_s"],
            "throttles_answered_by_standin": throttled,
            "throttles_unanswered": len([f for f in failed if "Throttle" in f[1]]),
            "races": races,
            "runners": runners,
            "calls_per_race": round(calls / races, 3) if races else None,
            "coverage_failures": len(failures(report)),
            "days_without_meetings": sum(1 for d in report if "no_meetings" in d["flags"]),
            "old_calls": old_calls,
            "old_wall_s": round(old_wall, 1),
            "mean_call_latency_ms": round(latency * 1000, 1),
            "parse_and_write_s": round(write_s, 1),
            # The provider's own time: from a request read to its answer's headers sent. A settled
            # rate admits a call one window after the answer to the call `limit` places before it,
            # so no client can sustain more than limit / (1 s + that time) without risking throttles.
            "standin_answer_ms_median": answer.get("median"),
            "standin_answer_ms_p95": answer.get("p95"),
            "ceiling_rps_at_answer_time": round(ceiling, 3) if ceiling else None,
            "share_of_ceiling": round(sustained / ceiling, 3) if ceiling else None,
            "speedup_vs_old": round(old_wall / wall, 2) if wall else None,
            # the headline, last: the rate held from the first call to the last, and throttles
            "requests_per_second_sustained": round(sustained, 3),
            "throttles": throttled,
        }
        if args.json:
            print(json.dumps(figures, indent=2))
        else:
            for key, value in figures.items():
                print(f"{key:>30}: {value}")
            for day, error in failed[:10]:
                print(f"  failed {day}: {error}")
        return 1 if failed else 0
    finally:
        server.stop()
        pg.stop()


def measure_latency(url: str, cred: dict, days: list[date], samples: int = 6, sessions: str = "") -> float:
    """Mean seconds per results call (the old client's call time), spaced out to stay under 2/s."""
    import requests

    del sessions
    times = []
    with requests.Session() as session:
        session.auth = (cred["login"], cred["password"])
        for d in days[:samples]:
            time.sleep(0.6)
            t0 = time.monotonic()
            response = session.get(
                f"{url}/v1/results",
                params={
                    "start_date": d.isoformat(),
                    "end_date": d.isoformat(),
                    "region": ["gb", "ire"],
                    "limit": OLD_PAGE,
                },
                timeout=30,
            )
            if response.status_code == 200:
                times.append(time.monotonic() - t0)
    return statistics.mean(times) if times else 0.0


def _serve_standin(scale: str, seed: int, per_second: float, warm: tuple[date, date], conn, stop) -> None:
    standin = build(scale, seed=seed, knobs=Knobs(per_second=per_second, seed=seed))
    # The real API has its data ready: generate the range first so calls time the client, not the
    # stand-in's generator competing for the same cores.
    standin.warm(*warm)
    server = serve(standin)
    conn.send((server.url, standin.credentials()))
    stop.wait()
    server.stop()


class StandInProcess:
    """The Racing API stand-in served from a child process."""

    def __init__(self, scale: str, seed: int, per_second: float, warm: tuple[date, date]) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._stop = ctx.Event()
        self._process = ctx.Process(
            target=_serve_standin, args=(scale, seed, per_second, warm, child, self._stop), daemon=True
        )
        self._process.start()
        self.url, self.credentials = parent.recv()

    def stats(self) -> dict:
        import requests

        return requests.get(f"{self.url}/_control/stats", timeout=30).json()

    def stop(self) -> None:
        self._stop.set()
        self._process.join(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
