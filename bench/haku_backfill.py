"""Benchmark: the Haku backfill against the Haku stand-in, with the quota "hour" scaled down.

Runs exactly what the haku_backfill DAG runs (``haku_backfill.plan``, then ``sync_batch`` for each
mapped batch), with the mapped tasks played by threads: ``--small-slots`` for the small and
medium events and ``--large-slots`` for the large ones, like the Airflow pools ``haku_api`` and
``haku_backfill_large``; a large batch starts once its own credential's small batches finished. Every call takes its slot from the
shared PostgreSQL limiter, per credential, at 500 calls per "hour" of ``--hour-seconds``; the
stand-in enforces the same quota with 429s, so a call let through too early shows as a throttle.

Prints: calls and wall time (and the real-time equivalent), per credential the share of its
quota used while it still had work waiting (sliding windows of one "hour", bench/quota.py), throttles, estimated
versus actual sizes, and the old approach on the same data: one call after another, 3.6 s apart,
25 per page, a detail call per registration, all partners in sequence.

    .venv/bin/python bench/haku_backfill.py --scale seed --hour-seconds 20
    .venv/bin/python bench/haku_backfill.py --scale seed --hour-seconds 20 --small-slots 4 --large-slots 2
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from haku_world import register_haku  # bench/haku_world.py
from quota import (  # bench/quota.py: quota share per key
    fmt,
    mean,
    merge,
    recorded_calls,
    share_of_windows_ending_in,
    window_share,
)
from scheduler import MappedTask, Scheduler  # bench/scheduler.py: mapped tasks, pools, reschedules

OLD_SECONDS_PER_CALL = 3.6
OLD_PAGE = 25
QUOTA = 500
PROBE_THREAD = "live-probe"  # the quota figures leave these threads' calls out


class LiveProbes:
    """The scheduled haku_sync while the backfill runs: every `--live-every` minutes of the quota
    hour, one thread per credential syncs that credential's smallest event (incremental once the
    backfill has it: a call or two) the way the haku_sync DAG's task does, rescheduling as Airflow
    would, and records how long it took to finish. The probes take no pool slot here."""

    def __init__(self, period_s: float, items: dict[str, dict], first_small_task: dict[str, str], scheduler: Scheduler):
        self.durations: dict[str, list[float]] = defaultdict(list)
        self.failures: dict[str, int] = defaultdict(int)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._probe, args=(period_s, iid, item, first_small_task[iid], scheduler),
                             name=f"{PROBE_THREAD}-{iid}", daemon=True)
            for iid, item in items.items()
        ]
        for thread in self._threads:
            thread.start()

    def _probe(self, period_s: float, integration_id: str, item: dict, after_task: str, scheduler: Scheduler) -> None:
        from airflow.sdk.exceptions import AirflowRescheduleException

        from paceline.registrations import haku_sync

        while not self._stop.wait(period_s):
            if scheduler.states.get(after_task) not in ("success", "failed"):
                continue  # the backfill is still writing this event: wait for it, as a real run's timing would
            started = time.monotonic()
            while not self._stop.is_set():
                try:
                    haku_sync.sync_batch([item])
                except AirflowRescheduleException as exc:
                    self._stop.wait(max(0.0, exc.reschedule_date.timestamp() - time.time()))
                    continue
                except Exception:
                    self.failures[integration_id] += 1
                break
            else:
                return
            self.durations[integration_id].append(time.monotonic() - started)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def report(self, login_of: dict[str, str], login_by_id: dict[str, str], hour: float) -> None:
        if not self._threads:
            return
        every = [d for ds in self.durations.values() for d in ds]
        print("  scheduled haku_sync probes during the backfill (smallest event of each credential), minutes of"
              " the quota hour from start to done:")
        if every:
            every.sort()
            print(f"    all: {len(every)} probes, median {every[len(every) // 2] / hour * 60:.1f} min, "
                  f"95th {every[int(len(every) * 0.95)] / hour * 60:.1f} min, max {every[-1] / hour * 60:.1f} min; "
                  f"failures {sum(self.failures.values())}")
        for iid, ds in sorted(self.durations.items()):
            ds.sort()
            print(f"    {login_of.get(login_by_id[iid], iid):12} {len(ds):4} probes, median {ds[len(ds) // 2] / hour * 60:5.1f} min,"
                  f" max {ds[-1] / hour * 60:5.1f} min")


def live_probes(args: argparse.Namespace, planned: dict, scheduler: Scheduler, hour: float) -> LiveProbes:
    from paceline.registrations import haku_backfill

    tasks = haku_backfill.small_tasks_by_integration(planned["small"]) if args.live_every > 0 else {}
    # a credential's first small batch starts with its smallest event (batches keep that order)
    items = {iid: planned["small"][indexes[0]][0] for iid, indexes in tasks.items()}
    first_task = {iid: f"{haku_backfill.SMALL_TASK_ID}_{indexes[0]}" for iid, indexes in tasks.items()}
    return LiveProbes(args.live_every * hour / 60.0, items, first_task, scheduler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="seed", choices=["seed", "small"])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--hour-seconds", type=float, default=20.0, help="length of the quota hour (real: 3600)")
    pools = json.loads((Path(__file__).resolve().parents[1] / "config" / "pools.json").read_text())
    parser.add_argument("--small-slots", type=int, default=pools["haku_api"]["slots"],
                        help="haku_api pool slots (default: config/pools.json)")
    parser.add_argument("--large-slots", type=int, default=pools["haku_backfill_large"]["slots"],
                        help="haku_backfill_large pool slots (default: config/pools.json)")
    parser.add_argument("--integrations", type=int, default=0, help="only the first N credentials (0: all)")
    parser.add_argument("--large-threshold", type=int, default=1000)
    parser.add_argument("--live-every", type=float, default=15.0,
                        help="quota-hour minutes between scheduled haku_sync probes per credential during the backfill (0: none)")
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="paceline-bench-haku-"))
    os.environ.setdefault("AIRFLOW_HOME", str(home / "airflow"))
    os.environ["PACELINE_RATE_HOUR_SECONDS"] = str(args.hour_seconds)
    os.environ["PACELINE_RETRY_BASE_S"] = "0.05"

    from paceline.db.embedded import EmbeddedPostgres, free_port
    from paceline.db.migrations import upgrade
    from paceline.registrations import haku_backfill
    from paceline.sandbox.base import serve
    from paceline.sandbox.haku import build

    pg = EmbeddedPostgres(home / "pg", free_port()).start()
    stack = contextlib.ExitStack()
    server = None
    try:
        dsn = pg.ensure_database("bench")
        upgrade(dsn)
        os.environ["AIRFLOW_CONN_PACELINE_WAREHOUSE"] = json.dumps(
            {"conn_type": "postgres", "host": "127.0.0.1", "port": pg.port, "login": "postgres", "schema": "bench"}
        )
        standin = build(args.scale, seed=args.seed)
        standin.knobs.update({"per_hour": QUOTA, "time_scale": args.hour_seconds / 3600.0})
        server = serve(standin)
        integrations = standin.integrations(server.url)
        if args.integrations:
            integrations = integrations[: args.integrations]
        register_haku(dsn, integrations, server.url, calls_per_hour=None)
        login_of = {i["login"]: i["integration_id"] for i in integrations}

        calls_log = stack.enter_context(recorded_calls(skip_thread_prefix=PROBE_THREAD))  # the backfill's calls and holds
        lock = threading.Lock()
        params = {"large_threshold": args.large_threshold}
        t0 = time.monotonic()
        planned = haku_backfill.plan(params)
        t_plan = time.monotonic() - t0
        small_batches = planned["small"]
        large_batches = planned["large"]
        small = [i for b in small_batches for i in b]
        large = [i for b in large_batches for i in b["events"]]
        active: dict[str, list[tuple[float, float]]] = defaultdict(list)  # login -> task intervals
        task_kinds: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
        login_by_id = {i["integration_id"]: i["login"] for i in integrations}
        small_done_at: dict[str, float] = {}

        def run(batch: list[dict], after_small: list[int] | None = None) -> list[dict]:
            if after_small is not None:  # the DAG's sync_large: wait for this credential's small batches
                haku_backfill.wait_for_small_events(after_small, scheduler, "bench")
            started = time.monotonic()
            integration_id = batch[0]["integration"]["integration_id"]
            try:
                return haku_backfill.sync_batch(batch, params)
            finally:
                ended = time.monotonic()
                with lock:
                    active[login_by_id[integration_id]].append((started, ended))
                    task_kinds[login_by_id[integration_id]].append((started, ended, "small" if after_small is None else "large"))
                    if after_small is None:
                        small_done_at[integration_id] = ended - t0

        scheduler = Scheduler("haku_backfill")
        live = live_probes(args, planned, scheduler, hour=args.hour_seconds)
        scheduler.run({
            "haku_api": (args.small_slots, [
                MappedTask(haku_backfill.SMALL_TASK_ID, n, functools.partial(run, b)) for n, b in enumerate(small_batches)
            ]),
            "haku_backfill_large": (args.large_slots, [
                MappedTask("sync_large", n, functools.partial(run, b["events"], b["after_small"]))
                for n, b in enumerate(large_batches)
            ]),
        })
        live.stop()
        if scheduler.errors:
            print(f"  FAILED tasks: {list(scheduler.errors.items())[:5]}")
        results = [r for out in scheduler.results.values() for r in out]
        t_small = max(small_done_at.values(), default=0.0)
        wall = time.monotonic() - t0
        stack.close()

        stats = standin.stats()
        calls = sum(len(v) for v in calls_log.stamps.values())
        hour = args.hour_seconds
        print(f"Haku backfill, scale={args.scale} seed={args.seed}, {len(integrations)} credentials, "
              f"quota {QUOTA} per {hour:g} s 'hour', pools: small {args.small_slots}, large {args.large_slots}")
        print(f"  events: {len(small)} small/medium, {len(large)} large (> {args.large_threshold}); "
              f"{sum(r['actual_size'] or 0 for r in results)} registrations")
        print(f"  calls: {calls} ({planned['figures']['estimate_calls']} to estimate sizes); "
              f"throttles received: {sum(stats['throttles'].values())}; reschedules: {scheduler.reschedules}")
        print(f"  wall: {wall:.1f} s (plan {t_plan:.1f} s, last small event done at {t_small:.1f} s) "
              f"= {wall / hour:.2f} quota hours = {wall / hour:.1f} h at the real 500/hour")
        misses = [(r["event_id"], r["estimated_size"], r["actual_size"]) for r in results if r["estimated_size"] != r["actual_size"]]
        print(f"  estimated vs actual size: {len(results) - len(misses)} of {len(results)} exact"
              + (f"; off: {misses[:5]}" if misses else ""))
        print("  per credential: calls, hours until its last call, share of its quota used in one-hour windows")
        print("    (a) from the start to its last call (includes time its work waited for a slot or for the plan),")
        print("    (b) while its quota held it back (from its first wait for the limiter to its last), (c) while one")
        print("    of its syncs was running; '-': never held back by the quota")
        print("    (a+) as (a), the scheduled syncs' calls (the probes) counted too: the credential's whole quota")
        shares: dict[str, list[float]] = {"a": [], "a+": [], "b": [], "c": []}
        for key, times in sorted(calls_log.stamps.items()):
            times.sort()
            login = key.split(":", 1)[1]
            every_call = sorted(times + calls_log.skipped_stamps.get(key, []))
            row = {
                "a": window_share(times, hour, QUOTA, [(t0, times[-1])]),
                "a+": window_share(every_call, hour, QUOTA, [(t0, times[-1])]),
                "b": share_of_windows_ending_in(times, hour, QUOTA, calls_log.held_back_span(key)),
                "c": window_share(times, hour, QUOTA, merge([(t0, t0 + t_plan)] + active.get(login, []))),
            }
            for name, value in row.items():
                if value is not None:
                    shares[name].append(value)
            print(f"    {login_of.get(login, login[:6]):12} {len(times):6} calls {(times[-1] - t0) / hour:6.2f} h"
                  f"  (a) {fmt(row['a'])}  (a+) {fmt(row['a+'])}  (b) {fmt(row['b'])}  (c) {fmt(row['c'])}")
        print("  idle gaps (no sync of the credential running) between its first wait for the quota and its last call:")
        for key, times in sorted(calls_log.stamps.items()):
            login = key.split(":", 1)[1]
            span = calls_log.held_back_span(key)
            if not span:
                continue
            busy = merge(active.get(login, []))
            gaps = [(a_end, b_start) for (_, a_end), (b_start, _) in zip(busy, busy[1:], strict=False)
                    if b_start > span[0][0] and a_end < times[-1]]
            total = sum(b - a for a, b in gaps) / hour
            longest = sorted(gaps, key=lambda g: g[0] - g[1])[:3]

            def kind_at(t: float, login: str = login) -> str:
                return next((k for start, _, k in sorted(task_kinds[login]) if start >= t - 1e-6), "-")

            def slots_at(t: float) -> str:  # small tasks running then, per credential: a full pool starves
                running = {login_of.get(other, other[:6]): sum(1 for s, e, k in spans if k == "small" and s <= t < e)
                           for other, spans in task_kinds.items()}
                return f"{sum(running.values())} small running"

            print(f"    {login_of.get(login, login[:6]):12} {len(gaps):5} gaps, {total:5.2f} h idle; longest: "
                  + ", ".join(f"{(b - a) / hour:.2f} h at {(a - t0) / hour:.1f} h (then {kind_at(b)}; "
                              f"{slots_at((a + b) / 2)})" for a, b in longest))
        live.report(login_of, login_by_id, hour)
        print(f"  mean share of quota used while work waited (goal >= 95%): (a) {fmt(mean(shares['a']))}"
              f"  (a+) {fmt(mean(shares['a+']))}"
              f"  (b) {fmt(mean(shares['b']))}  (c) {fmt(mean(shares['c']))}")

        # the old approach on the same data: sequential, 3.6 s apart, 25 per page, stop at a short page
        old_calls = 0
        for i in integrations:
            events = standin.events_for(i["login"])
            old_calls += max(1, -(-len(events) // OLD_PAGE)) + 1
            for ev in events:
                n = ev["registration_count"]
                old_calls += n // OLD_PAGE + 1 + n
        old_hours = old_calls * OLD_SECONDS_PER_CALL / 3600
        # 3.6 s per call is 1,000 calls an hour: twice Haku's 500, so the quota, not the sleep, bounds it
        old_bound = max(old_hours, old_calls / QUOTA)
        ours = wall / hour
        print(f"  old approach (sequential, 3.6 s apart, 25 per page, all partners one after another): "
              f"{old_calls} calls, {old_hours:.1f} h at 3.6 s per call, >= {old_bound:.1f} h under the 500/hour quota")
        print(f"  here: {calls} calls in {ours:.1f} h: {old_hours / ours:.1f}x faster than its nominal time, "
              f"{old_bound / ours:.1f}x faster than its quota-bound time")
    finally:
        stack.close()
        if server is not None:
            server.stop()
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
