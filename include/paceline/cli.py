"""`python -m paceline`: the operator commands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _db_upgrade(args: argparse.Namespace) -> int:
    from paceline.db.migrations import upgrade
    from paceline.db.warehouse import dsn_from_airflow

    applied = upgrade(args.dsn or dsn_from_airflow(args.conn_id))
    print(f"applied migrations: {', '.join(applied)}" if applied else "warehouse is up to date")
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    from paceline.sandbox import manager

    if args.action == "up":
        state = manager.up(scale=args.scale, seed=args.seed, foreground=args.foreground)
        print(json.dumps(state, indent=2) if args.json else manager.describe(state))
    elif args.action == "down":
        print(manager.down())
    else:
        state = manager.status()
        if args.json:
            print(json.dumps(state))
        else:
            print(manager.describe(state) if state else "sandbox is not running")
        return 0 if state else 1
    return 0


def _run(args: argparse.Namespace) -> int:
    from paceline.local_stack import run

    return run(scale=args.scale, port=args.port, host=args.host)


def _nba_check(args: argparse.Namespace) -> int:
    import datetime as dt

    from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook

    from paceline.nba.quality import DataQualityError, check_range

    start, end = dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end)
    try:
        results = check_range(BigQueryHook(gcp_conn_id=args.conn_id), start, end, band=(args.band_low, args.band_high))
    except DataQualityError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    for result in results:
        print(result)
    return 0


def _racing_coverage(args: argparse.Namespace) -> int:
    from paceline.racing.coverage import main as coverage_main

    argv = ["--start", args.start, "--end", args.end] + (["--dsn", args.dsn] if args.dsn else [])
    return coverage_main(argv + (["--json"] if args.json else []))


def _pools(args: argparse.Namespace) -> int:
    from paceline.config import pools_file

    print(pools_file())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m paceline", description="Paceline operator commands")
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="warehouse schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="apply pending migrations to the warehouse (idempotent)")
    up.add_argument("--conn-id", default="paceline_warehouse")
    up.add_argument("--dsn", help="a libpq DSN instead of the Airflow connection")
    up.set_defaults(func=_db_upgrade)

    sandbox = sub.add_parser("sandbox", help="local stand-ins of RunSignUp, Haku, The Racing API and BigQuery")
    sandbox.add_argument("action", choices=["up", "down", "status"])
    sandbox.add_argument("--scale", choices=["small", "seed"], default="small")
    sandbox.add_argument("--seed", type=int, default=7)
    sandbox.add_argument("--json", action="store_true", help="print one JSON object")
    sandbox.add_argument("--foreground", action="store_true", help=argparse.SUPPRESS)
    sandbox.set_defaults(func=_sandbox)

    run = sub.add_parser("run", help="start everything locally: PostgreSQL, stand-ins, Airflow (make run)")
    run.add_argument("--scale", choices=["small", "seed"], default="small")
    run.add_argument("--port", type=int, default=8080, help="Airflow UI/API port")
    run.add_argument(
        "--host", default=None, help="address the api-server binds (default 127.0.0.1, or PACELINE_API_HOST; 0.0.0.0 opens it)"
    )
    run.set_defaults(func=_run)

    nba = sub.add_parser("nba", help="NBA player_game_summary")
    nba_sub = nba.add_subparsers(dest="nba_command", required=True)
    check = nba_sub.add_parser("check", help="quality gate over a date range (exit 1 when a rule fails)")
    check.add_argument("--start", required=True, help="YYYY-MM-DD")
    check.add_argument("--end", required=True, help="YYYY-MM-DD")
    check.add_argument("--band-low", type=float, default=0.35, help="lowest NULL share of minutes_played")
    check.add_argument("--band-high", type=float, default=0.45, help="highest NULL share of minutes_played")
    check.add_argument("--conn-id", default="google_cloud_default")
    check.set_defaults(func=_nba_check)

    racing = sub.add_parser("racing", help="horse racing")
    racing_sub = racing.add_subparsers(dest="racing_command", required=True)
    cov = racing_sub.add_parser(
        "coverage", help="per-day races/runners report (exit 1 on days not loaded or races without runners)"
    )
    cov.add_argument("--start", required=True, help="YYYY-MM-DD")
    cov.add_argument("--end", required=True, help="YYYY-MM-DD")
    cov.add_argument("--dsn", help="a libpq DSN instead of the paceline_warehouse connection")
    cov.add_argument("--json", action="store_true")
    cov.set_defaults(func=_racing_coverage)

    pools = sub.add_parser("pools-file", help="print the path of the pools file (airflow pools import FILE)")
    pools.set_defaults(func=_pools)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
