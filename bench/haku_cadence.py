"""Benchmark: do near events keep their 15-minute cadence while a large new Haku event arrives?

Plays the scheduled ``haku_sync`` DAG against the Haku stand-in with the quota "hour" scaled down:
a run every quarter of an hour (``max_active_runs=1``: a run that overruns delays the next one,
as in Airflow), each run's ``plan`` then its mapped ``sync`` tasks in a ``haku_api`` pool of
``--slots`` threads (bench/scheduler.py), with the DAG's own task code. The proximity tiers are
scaled with the hour, so "every 15 minutes" means a quarter of ``--hour-seconds``.

First every future event is synced once with the quota lifted (the state a running installation
is in) and its calls left to slide out of the quota's window; then a new event of ``--new-size`` registrations arrives on one credential, 10 days out,
and ``--runs`` scheduled runs follow at the real quota (500 per hour per credential, enforced by
the stand-in with 429s). Prints, for the events within 2 days, the worst gap between two
successful syncs against the 15-minute target (the lateness), the new event's progress, calls
and throttles. ``--budget 0`` turns the per-event call budget off, to compare.

    .venv/bin/python bench/haku_cadence.py --hour-seconds 40 --runs 12
    .venv/bin/python bench/haku_cadence.py --hour-seconds 40 --runs 12 --budget 0
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import requests
from haku_world import register_haku  # bench/haku_world.py
from scheduler import MappedTask, Scheduler  # bench/scheduler.py: mapped tasks, pools, reschedules

QUOTA = 500
NEAR_DAYS = 2


def scaled_tiers(hour_seconds: float) -> list[list[float | None]]:
    scale = hour_seconds / 3600.0
    return [[2, 15 * scale], [14, 60 * scale], [60, 360 * scale], [None, 1440 * scale]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="seed", choices=["seed", "small"])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--hour-seconds", type=float, default=40.0, help="length of the quota hour (real: 3600)")
    parser.add_argument("--runs", type=int, default=12, help="scheduled runs after the new event arrives")
    parser.add_argument("--slots", type=int, default=8, help="haku_api pool slots")
    parser.add_argument("--new-size", type=int, default=5000)
    parser.add_argument("--near-per-credential", type=int, default=2, help="events added 1 day out per credential")
    parser.add_argument("--budget", type=int, default=None,
                        help="event_call_budget param (default: the DAG's, an eighth of the hourly quota; 0: none)")
    args = parser.parse_args(argv)
    hour = args.hour_seconds
    quarter = hour / 4

    home = Path(tempfile.mkdtemp(prefix="paceline-bench-cadence-"))
    os.environ.setdefault("AIRFLOW_HOME", str(home / "airflow"))
    os.environ["PACELINE_RATE_HOUR_SECONDS"] = str(hour)
    os.environ["PACELINE_RETRY_BASE_S"] = "0.05"

    from airflow.sdk.exceptions import AirflowRescheduleException  # noqa: F401 - the scheduler's

    from paceline.db.embedded import EmbeddedPostgres, free_port
    from paceline.db.migrations import upgrade
    from paceline.registrations import haku_sync
    from paceline.sandbox.base import serve
    from paceline.sandbox.haku import build

    pg = EmbeddedPostgres(home / "pg", free_port()).start()
    server = None
    try:
        dsn = pg.ensure_database("bench")
        upgrade(dsn)
        os.environ["AIRFLOW_CONN_PACELINE_WAREHOUSE"] = json.dumps(
            {"conn_type": "postgres", "host": "127.0.0.1", "port": pg.port, "login": "postgres", "schema": "bench"}
        )
        standin = build(args.scale, seed=args.seed)
        standin.knobs.update({"per_hour": QUOTA, "time_scale": hour / 3600.0, "throttle_mode": "off"})
        server = serve(standin)
        integrations = standin.integrations(server.url)
        register_haku(dsn, integrations, server.url, calls_per_hour=1_000_000)
        for i in integrations:  # events of the coming days: the ones whose cadence matters most
            for n in range(args.near_per_credential):
                requests.post(f"{server.url}/_control/mutate", json={
                    "action": "add_event", "client_id": i["login"], "name": f"Tomorrow 5K #{n + 1}",
                    "offset_days": 1, "count": 40}, timeout=30).raise_for_status()
        base_params = {"proximity_tiers": scaled_tiers(hour)}
        if args.budget is not None:
            base_params["event_call_budget"] = args.budget

        def play_run(params: dict, on_done: dict[str, list[float]] | None = None) -> tuple[int, Scheduler]:
            batches = haku_sync.plan(params)
            scheduler = Scheduler("haku_sync")

            def sync(batch: list[dict]) -> list[dict]:
                results = haku_sync.sync_batch(batch, params)
                if on_done is not None:
                    for result in results:
                        if result["status"] == "success":
                            on_done[result["event_id"]].append(time.monotonic())
                return results

            scheduler.run({"haku_api": (args.slots, [MappedTask("sync", n, functools.partial(sync, b))
                                                    for n, b in enumerate(batches)])})
            return sum(len(b) for b in batches), scheduler

        # 1. the installation as it runs today: every future event synced once, quota lifted
        t = time.monotonic()
        synced, _ = play_run({**base_params, "due_only": False, "event_call_budget": 0})
        print(f"warm-up: {synced} future events synced in {time.monotonic() - t:.0f} s (quota lifted)")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE registrations.provider_integrations SET calls_per_hour = NULL")
        time.sleep(hour * 1.05)  # the warm-up's calls leave the quota's window: the runs start on a quiet hour
        standin.knobs.update({"throttle_mode": "quota"})
        standin.reset_stats()

        # 2. a large new event arrives on the first credential; scheduled runs follow
        big = requests.post(f"{server.url}/_control/mutate", json={
            "action": "add_event", "client_id": integrations[0]["login"], "name": "Big City Marathon",
            "offset_days": 10, "count": args.new_size}, timeout=30).json()["result"]
        today = datetime.now(UTC).date()
        near = {e["event_id"]: e for i in integrations for e in standin.events_for(i["login"])
                if e.get("event_date") and 0 <= (date.fromisoformat(e["event_date"][:10]) - today).days <= NEAR_DAYS}
        done_at: dict[str, list[float]] = defaultdict(list)
        t0 = time.monotonic()
        run_starts, run_ends, errors = [], [], 0
        for run in range(args.runs):
            due = t0 + run * quarter
            start = max(due, run_ends[-1] if run_ends else t0)  # max_active_runs=1
            time.sleep(max(0.0, start - time.monotonic()))
            run_starts.append(time.monotonic())
            _, scheduler = play_run(base_params, done_at)
            errors += len(scheduler.errors)
            run_ends.append(time.monotonic())
        end = time.monotonic()

        stats = standin.stats()
        print(f"Haku cadence, scale={args.scale}: {len(integrations)} credentials, quota {QUOTA} per {hour:g} s 'hour', "
              f"{args.slots} slots, event_call_budget={args.budget if args.budget is not None else 'default'}")
        print(f"  new event: {big['count']} registrations on {integrations[0]['integration_id']}; "
              f"{len(near)} events within {NEAR_DAYS} days across all credentials")
        overruns = [(e - s) / quarter for s, e in zip(run_starts, run_ends, strict=True)]
        print(f"  {args.runs} runs over {(end - t0) / hour:.2f} quota hours; longest run {max(overruns):.2f} quarter-hours; "
              f"failed tasks {errors}; throttles received {sum(stats['throttles'].values())}")
        worst, worst_event = 0.0, None
        for event_id in near:
            stamps = [t0] + sorted(done_at.get(event_id, [])) + [end]
            gap = max(b - a for a, b in zip(stamps, stamps[1:], strict=False))
            if gap > worst:
                worst, worst_event = gap, event_id
        lateness_min = max(0.0, worst - quarter) / hour * 60
        print(f"  near events: worst gap between syncs {worst / hour * 60:.1f} quota-minutes "
              f"(target 15): worst lateness {lateness_min:.1f} min"
              + (f" ({near[worst_event]['name']})" if worst_event else ""))
        with psycopg.connect(dsn) as conn:
            stored = conn.execute("SELECT count(*) FROM registrations.haku_participants WHERE event_id = %s",
                                  (big["event_id"],)).fetchone()[0]
        print(f"  new event: {stored} of {big['count']} registrations stored after {args.runs} runs "
              f"(the rest follows in later runs at about {QUOTA / 8:.0f} calls per run)")
        print(f"  wall: {end - t0:.0f} s = {(end - t0) / hour:.2f} quota hours; {timedelta(seconds=round(end - t0))}")
    finally:
        if server is not None:
            server.stop()
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
