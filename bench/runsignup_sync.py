"""Benchmark: runsignup_sync against the RunSignUp stand-in, with the quota's hour scaled down.

Runs what the DAG runs (plan, then the mapped items on W concurrent workers, each event one
transaction, every call through the shared PostgreSQL limiter at each key's 1,000 calls per
"hour") twice:

1. the first full sync of every event of every integration (past events included, as the old
   nightly loop did);
2. a nightly incremental of the same events after 1% of the participants changed;
3. the nightly a user runs with the defaults (future events only), after 1% of them changed.

Prints for each: calls, wall time, rows, throttles the stand-in answered (goal 0), each key's
share of its quota used while it had work waiting (bench/quota.py: sliding one-"hour" windows
(a) from the start of the run to its last call, which also counts time its work waited for the
plan or for a pool slot, and (b) while the quota held it back), and beside them the old
approach's figures for the same work, computed from the same data: one call after another,
3.6 s between calls, 25 participants per page (full: every page of every event; nightly: one
modified-since call per event plus the pages of the changes).

    .venv/bin/python bench/runsignup_sync.py --scale seed --hour-seconds 36
    .venv/bin/python bench/runsignup_sync.py --scale small        # a quick run
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import quota as quota_use  # bench/quota.py: quota share per key
from scheduler import MappedTask, Scheduler  # bench/scheduler.py: mapped tasks, pools, reschedules

from paceline.db.embedded import EmbeddedPostgres, free_port
from paceline.db.migrations import upgrade
from paceline.http.session import RetryPolicy
from paceline.sandbox.base import serve
from paceline.sandbox.runsignup import build, default_knobs

OLD_GAP_S = 3.6  # the old loop's fixed sleep between calls
OLD_PAGE = 25  # the old loop's participants per page
QUOTA = 1000  # calls per hour per key (provider_integrations.calls_per_hour default); --quota overrides

INSERT_PARTNER = "INSERT INTO registrations.timing_partners VALUES (%s, %s) ON CONFLICT DO NOTHING"
INSERT_INTEGRATION = """
INSERT INTO registrations.provider_integrations
    (integration_id, provider, timing_partner_id, organization, conn_id, calls_per_hour)
VALUES (%s, 'runsignup', %s, %s, %s, %s) ON CONFLICT DO NOTHING
"""


def run_sync(params: dict[str, Any], workers: int, retry: RetryPolicy, calls: quota_use.CallLog) -> dict[str, Any]:
    """plan + the mapped items on a thread pool, as the scheduler would with a pool of `workers` slots."""
    from paceline.registrations import runsignup_sync as rsu

    started = time.monotonic()
    items = rsu.plan(params, retry=retry)
    planned = time.monotonic()
    scheduler = Scheduler("runsignup_sync")
    tasks = [MappedTask("sync", n, functools.partial(rsu.sync_batch, item, params, retry=retry))
             for n, item in enumerate(items)]
    scheduler.run({"runsignup_api": (workers, tasks)})
    summaries = [e for result in scheduler.results.values() for e in result["events"]]
    failed = [str(exc)[:300] for exc in scheduler.errors.values()]  # what Airflow would retry; reported below
    return {
        "items": len(items),
        "events": len(summaries),
        "started": started,
        "plan_s": planned - started,
        "wall_s": time.monotonic() - started,
        "summaries": summaries,
        "integrations": sorted({e["integration"]["integration_id"] for item in items for e in item["events"]}),
        "stamps": {key: sorted(times) for key, times in calls.stamps.items()},
        "held_back": {key: calls.held_back_span(key, since=started) for key in calls.stamps},
        "failed": failed,
        "reschedules": scheduler.reschedules,
    }


def figures(
    run: dict[str, Any], stats: dict[str, Any], logins: dict[str, str], hour_s: float, quota: int
) -> dict[str, Any]:
    """Run figures; a key's quota share (a) from the start of the run to its last call and (b) while
    the quota held it back (bench/quota.py)."""
    s = run["summaries"]
    per_key = {}
    for integration_id in run["integrations"]:
        key = f"runsignup:{logins[integration_id]}"
        times = run["stamps"].get(key, [])
        calls = sum(stats["calls"].get(logins[integration_id], {}).values())
        waiting = quota_use.window_share(times, hour_s, quota, [(run["started"], times[-1])]) if times else None
        held = quota_use.share_of_windows_ending_in(times, hour_s, quota, run["held_back"].get(key, []))
        per_key[integration_id] = {"calls": calls, "hours_to_last_call": round((times[-1] - run["started"]) / hour_s, 2)
                                   if times else 0.0, "share_while_waiting": waiting, "share_while_held_back": held}
    bound = [v for v in per_key.values() if v["share_while_waiting"] is not None]  # over an hour of work
    held = [v["share_while_held_back"] for v in per_key.values() if v["share_while_held_back"] is not None]
    return {
        "mapped_items": run["items"],
        "events": run["events"],
        "failed_items": len(run["failed"]),
        "reschedules": run["reschedules"],
        "full_syncs": sum(1 for x in s if x["sync_type"] == "full"),
        "incremental_syncs": sum(1 for x in s if x["sync_type"] == "incremental"),
        "calls": stats["total_calls"],
        "wall_s": round(run["wall_s"], 1),
        "wall_quota_hours": round(run["wall_s"] / hour_s, 2),
        "plan_s": round(run["plan_s"], 1),
        "rows_inserted": sum(x["inserted"] for x in s),
        "rows_updated": sum(x["updated"] for x in s),
        "rows_removed": sum(x["removed"] for x in s),
        "throttles_received": sum(stats["throttles"].values()),
        "calls_per_key_max": max((v["calls"] for v in per_key.values()), default=0),
        "keys_busy_over_an_hour": len(bound),
        "keys_held_back_by_quota": len(held),
        "quota_share_from_start_mean": _pct(quota_use.mean([v["share_while_waiting"] for v in bound])),
        "quota_share_from_start_min": _pct(min((v["share_while_waiting"] for v in bound), default=None)),
        "quota_share_while_held_back_mean": _pct(quota_use.mean(held)),
        "quota_share_while_held_back_min": _pct(min(held, default=None)),
        "per_key": per_key,
    }


def _pct(value: float | None) -> str:
    return quota_use.fmt(value).strip()


def old_full(standin: Any, logins: list[str]) -> int:
    calls = 0
    for login in logins:
        races = standin.races_of(login)
        calls += max(1, math.ceil(len(races) / OLD_PAGE))  # race list by 25
        for event in standin.events_for(login):
            calls += max(1, math.ceil(event["participant_count"] / OLD_PAGE))
    return calls


def old_incremental(standin: Any, logins: list[str], changed: dict[int, int]) -> int:
    calls = 0
    for login in logins:
        calls += max(1, math.ceil(len(standin.races_of(login)) / OLD_PAGE))
        for event in standin.events_for(login):
            calls += max(1, math.ceil(changed.get(event["event_id"], 0) / OLD_PAGE))
    return calls


def show(title: str, data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps({title: data}, indent=2, default=str))
        return
    print(f"\n== {title}")
    for key, value in data.items():
        if key == "per_key":
            print(f"{'':>32}  per key: calls, quota hours to its last call, share of its quota used (a) from the")
            print(f"{'':>32}  start to its last call, (b) while the quota held it back (bench/quota.py)")
            print(f"{'':>32}  ('-': never held back by the quota)")
            for integration_id, v in value.items():
                print(f"{'':>32}  {integration_id:14} {v['calls']:6} calls {v['hours_to_last_call']:6.2f} h"
                      f"  (a) {quota_use.fmt(v['share_while_waiting'])}  (b) {quota_use.fmt(v['share_while_held_back'])}")
        else:
            print(f"{key:>32}: {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="seed", choices=["seed", "small"])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--hour-seconds", type=float, default=36.0, help="length of the quota's hour (default 36: 100x)")
    parser.add_argument("--quota", type=int, default=QUOTA, help="calls per hour per key (default 1000)")
    pool_slots = json.loads((Path(__file__).resolve().parents[1] / "config" / "pools.json").read_text())["runsignup_api"]["slots"]
    parser.add_argument("--workers", type=int, default=pool_slots,
                        help="concurrent mapped tasks (default: the runsignup_api pool in config/pools.json)")
    parser.add_argument("--change", type=float, default=0.01, help="share of participants changed before the nightly")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="paceline-bench-rsu-"))
    os.environ.setdefault("AIRFLOW_HOME", str(tmp / "airflow"))
    os.environ["PACELINE_RATE_HOUR_SECONDS"] = str(args.hour_seconds)
    pg = EmbeddedPostgres(tmp / "pg", free_port()).start()
    dsn = pg.ensure_database("bench")
    upgrade(dsn)
    os.environ["AIRFLOW_CONN_PACELINE_WAREHOUSE"] = json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": pg.port, "login": "postgres", "schema": "bench"})
    standin = build(args.scale, seed=args.seed,
                    knobs=default_knobs(seed=args.seed, per_hour=args.quota, time_scale=args.hour_seconds / 3600))
    server = serve(standin)
    integrations = standin.integrations()
    logins = {i["integration_id"]: i["login"] for i in integrations}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in integrations:
            conn.execute(INSERT_PARTNER, (i["timing_partner_id"], i["timing_partner_name"]))
            conn.execute(INSERT_INTEGRATION, (i["integration_id"], i["timing_partner_id"], i["organization"], i["conn_id"],
                                                  args.quota))
            os.environ[f"AIRFLOW_CONN_{i['conn_id'].upper()}"] = json.dumps(
                {"conn_type": "runsignup", "host": f"{server.url}/Rest", "login": i["login"], "password": i["password"]})
    retry = RetryPolicy(base_s=0.2, throttle_wait_s=args.hour_seconds / 360)
    params = {"future_only": False, "due_only": False}
    stack = contextlib.ExitStack()
    try:
        events = [e for login in logins.values() for e in standin.events_for(login)]
        print(f"runsignup_sync bench: scale {args.scale}, {len(integrations)} keys, {len(events)} events, "
              f"{sum(e['participant_count'] for e in events)} participants, quota {args.quota}/hour with an hour of "
              f"{args.hour_seconds:g} s, {args.workers} workers", file=sys.stderr)
        old_full_calls = old_full(standin, list(logins.values()))

        calls = stack.enter_context(quota_use.recorded_calls())  # both runs: a window spans them
        full = run_sync(params, args.workers, retry, calls)
        full_figures = figures(full, standin.stats(), logins, args.hour_seconds, args.quota)
        full_figures.update(old_calls=old_full_calls, old_wall_s=round(old_full_calls * OLD_GAP_S),
                            old_wall_h=round(old_full_calls * OLD_GAP_S / 3600, 2),
                            calls_vs_old=round(full_figures["calls"] / old_full_calls, 3),
                            busiest_key_share_of_an_hours_quota=round(full_figures["calls_per_key_max"] / args.quota, 3))
        show("first full sync", full_figures, args.json)

        standin.reset_stats()
        mutation = standin.mutate("modify_participants", {"fraction": args.change})
        changed = {e["event_id"]: e["count"] for e in mutation["events"]}
        old_incr_calls = old_incremental(standin, list(logins.values()), changed)
        nightly = run_sync(params, args.workers, retry, calls)
        nightly_figures = figures(nightly, standin.stats(), logins, args.hour_seconds, args.quota)
        nightly_figures.update(participants_changed=mutation["count"], old_calls=old_incr_calls,
                               old_wall_s=round(old_incr_calls * OLD_GAP_S),
                               old_wall_h=round(old_incr_calls * OLD_GAP_S / 3600, 2),
                               calls_vs_old=round(nightly_figures["calls"] / old_incr_calls, 3),
                               busiest_key_share_of_an_hours_quota=round(
                                   nightly_figures["calls_per_key_max"] / args.quota, 3))
        show(f"nightly incremental after {args.change:.0%} changed", nightly_figures, args.json)

        # 3. the nightly a user runs with the defaults: future events only (future_only on)
        standin.reset_stats()
        mutation = standin.mutate("modify_participants", {"fraction": args.change, "future_only": True})
        future = run_sync({"due_only": False}, args.workers, retry, calls)
        future_figures = figures(future, standin.stats(), logins, args.hour_seconds, args.quota)
        future_figures.update(participants_changed=mutation["count"],
                              calls_per_partner_max=future_figures["calls_per_key_max"],
                              real_wall_min_at_the_quota=round(
                                  future_figures["calls_per_key_max"] / args.quota * 60, 1))
        show(f"nightly with the defaults (future events only) after {args.change:.0%} of them changed",
             future_figures, args.json)
        return 1 if full["failed"] or nightly["failed"] or future["failed"] else 0
    finally:
        stack.close()
        server.stop()
        # the limiter's background leaker would report the database going away: close its pools first
        from paceline.http.limiter import SharedRateLimiter

        logging.getLogger("pyrate_limiter").setLevel(logging.CRITICAL)
        logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
        threading.excepthook = lambda args: None
        for pool in list(SharedRateLimiter._pools.values()):
            pool.close()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
