"""`python -m paceline`: the operator commands."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from typing import TextIO


class CommandError(Exception):
    """An operator error: printed as one clear line, exit code 2, no traceback."""


def use_metadata_connections() -> None:
    """Let Airflow's SDK find connections in the metadata database too (as the UI and `airflow
    connections get` do): outside a task it reads only AIRFLOW_CONN_* and secrets backends."""
    from paceline.ops.localenv import airflow_configured

    if airflow_configured():
        os.environ.setdefault("_AIRFLOW_PROCESS_CONTEXT", "server")


def warehouse_dsn(args: argparse.Namespace) -> str:
    """The warehouse DSN from --dsn or the Airflow connection, or a CommandError saying what to set."""
    if getattr(args, "dsn", None):
        return args.dsn
    from paceline.ops.localenv import airflow_configured

    conn_id = getattr(args, "conn_id", None) or "paceline_warehouse"
    # Without any Airflow settings, asking Airflow would create a stray ~/airflow with SQLite.
    if f"AIRFLOW_CONN_{conn_id.upper()}" not in os.environ and not airflow_configured():
        raise CommandError(
            f"no warehouse connection: `{conn_id}` is not defined here. After `make run`, run `source var/env` "
            f"in this terminal; elsewhere set AIRFLOW_CONN_{conn_id.upper()} (or give --dsn postgresql://...)"
        )
    from paceline.db.warehouse import dsn_from_airflow

    use_metadata_connections()
    try:
        return dsn_from_airflow(conn_id)
    except Exception as exc:  # AirflowNotFoundException, an unreachable metadata database...
        raise CommandError(f"no warehouse connection `{conn_id}`: {exc}") from None


def warehouse(args: argparse.Namespace, **kwargs: object) -> object:
    """An open warehouse connection, or a CommandError naming the server that did not answer."""
    return connect_warehouse(warehouse_dsn(args), **kwargs)


def connect_warehouse(dsn: str, **kwargs: object) -> object:
    import psycopg

    try:
        return psycopg.connect(dsn, connect_timeout=10, **kwargs)
    except psycopg.OperationalError as exc:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
        where = f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CommandError(f"cannot reach the warehouse at {where} ({first}); is `make run` running?") from None


def _db_upgrade(args: argparse.Namespace) -> int:
    from paceline.db.migrations import upgrade

    dsn = warehouse_dsn(args)
    connect_warehouse(dsn).close()  # a clear message when the server is not there
    applied = upgrade(dsn)
    out(f"applied migrations: {', '.join(applied)}" if applied else "warehouse is up to date")
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    from paceline.sandbox import manager

    if args.action == "up":
        state = manager.up(scale=args.scale, seed=args.seed, foreground=args.foreground)
        out(json.dumps(state, indent=2) if args.json else manager.describe(state))
    elif args.action == "down":
        out(manager.down())
    else:
        state = manager.status()
        if args.json:
            out(json.dumps(state))
        else:
            out(manager.describe(state) if state else "sandbox is not running")
        return 0 if state else 1
    return 0


def _run(args: argparse.Namespace) -> int:
    from paceline.local_stack import run

    return run(scale=args.scale, port=args.port, host=args.host)


def _nba_settings(args: argparse.Namespace) -> object:
    from paceline.nba.settings import DEFAULTS

    overrides = {"null_share_fail_above": args.fail_above, "min_zone_coverage": args.min_zone_coverage}
    return DEFAULTS.with_overrides({k: v for k, v in overrides.items() if v is not None})


def _nba_check(args: argparse.Namespace) -> int:
    import datetime as dt

    from paceline.nba.quality import DataQualityError, check_range, warnings
    from paceline.nba.tasks import bigquery_client
    from paceline.providers.bigquery import BigQueryError

    start, end = dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end)
    rows = tuple(args.rows) if args.rows else None
    try:
        results = check_range(bigquery_client(args.conn_id), start, end, band=(args.band_low, args.band_high),
                              settings=_nba_settings(args), expected_rows=rows)
    except (DataQualityError, BigQueryError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    for result in results:
        out(result.describe())
    for note in warnings(results):
        print(f"WARNING (passes with a note): {note}", file=sys.stderr)
    return 0


def _nba_setup(args: argparse.Namespace) -> int:
    from paceline.nba.setup import SetupError, ensure_summary_table
    from paceline.nba.tasks import bigquery_client
    from paceline.providers.bigquery import BigQueryError

    try:
        result = ensure_summary_table(bigquery_client(args.conn_id), location=args.location)
    except (SetupError, BigQueryError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    out(result.describe())
    return 0


def _racing_coverage(args: argparse.Namespace) -> int:
    from paceline.racing.coverage import main as coverage_main

    argv = ["--start", args.start, "--end", args.end] + (["--dsn", args.dsn] if args.dsn else [])
    return coverage_main(argv + (["--json"] if args.json else []))


def _pools(args: argparse.Namespace) -> int:
    from paceline.config import pools_file

    out(pools_file())
    return 0


# These commands connect before importing their modules: importing Airflow (the limiter does)
# without settings would create a stray ~/airflow.
def _status(args: argparse.Namespace) -> int:
    with warehouse(args) as conn:
        from paceline.ops import status
        from paceline.ops.render import render_status

        report = status.status_report(conn)
    out(json.dumps(report, indent=2) if args.json else render_status(report))
    return 0


def _quota(args: argparse.Namespace) -> int:
    with warehouse(args, autocommit=True) as conn:
        from paceline.ops import quota
        from paceline.ops.render import render_quota

        use_metadata_connections()  # the credentials' connections, e.g. those the sandbox wrote

        snapshot = quota.quota_snapshot(conn)
    out(json.dumps(snapshot, indent=2) if args.json else render_quota(snapshot))
    return 0


def _integrations(args: argparse.Namespace) -> int:
    from pathlib import Path

    with warehouse(args) as conn:
        from paceline.ops import integrations as ops
        from paceline.ops.render import render_integrations

        try:
            if args.action == "list":
                rows = ops.list_integrations(conn)
                out(json.dumps(rows, indent=2) if args.json else render_integrations(rows))
            elif args.action == "add":
                entry = {"integration_id": args.integration_id, "provider": args.provider,
                         "timing_partner_id": args.partner, "timing_partner_name": args.partner_name,
                         "organization": args.organization, "conn_id": args.conn_id_of_integration,
                         "calls_per_hour": args.calls_per_hour, "calls_per_second": args.calls_per_second}  # fmt: skip
                ops.upsert_integrations(conn, [entry])
                out(f"integration {args.integration_id} registered and enabled (connection {args.conn_id_of_integration})")
            elif args.action == "import":
                ids = ops.import_file(conn, Path(args.file) if args.file else None)
                out(f"imported {len(ids)} integration(s){': ' + ', '.join(ids) if ids else ''}")
            elif args.sandbox:
                if args.action != "disable":
                    raise CommandError("--sandbox goes with disable only")
                ids = ops.disable_sandbox_integrations(conn)
                out(f"disabled {len(ids)} sandbox integration(s){': ' + ', '.join(ids) if ids else ''}")
            elif not args.integration_id:
                raise CommandError(f"integrations {args.action}: name an integration id (or --sandbox)")
            else:
                ops.set_enabled(conn, args.integration_id, args.action == "enable")
                out(f"integration {args.integration_id} {args.action}d")
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    return 0


def _airflow_passthrough(argv: Sequence[str]) -> int:
    """`paceline airflow ARGS`: Airflow's own CLI with the local stack's settings (var/env)."""
    from pathlib import Path

    from paceline.ops.localenv import airflow_configured

    if not airflow_configured():
        raise CommandError("no Airflow settings here: start the stack with `make run` (it writes var/env) first")
    airflow = Path(sys.executable).with_name("airflow")
    os.execv(str(airflow), [str(airflow), *argv])  # noqa: S606 - the venv's own airflow
    return 0  # not reached


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paceline",
        description="Paceline operator commands (also `python -m paceline`). After `make run`, they read var/env.",
    )
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
    check.add_argument("--fail-above", type=float, help="NULL share above which the gate fails (default 0.60)")
    check.add_argument("--min-zone-coverage", type=float, help="least share of attempts in a zone (default 0.85)")
    check.add_argument("--rows", type=int, nargs=2, metavar=("MIN", "MAX"),
                       help="expected row count (default for 2021-10-01..2024-05-01: 110000 160000)")
    check.add_argument("--conn-id", default="google_cloud_default")
    check.set_defaults(func=_nba_check)
    nba_setup = nba_sub.add_parser(
        "setup", help="create nba_analytics and the partitioned, clustered player_game_summary if missing"
    )
    nba_setup.add_argument("--location", help="dataset location (default: that of nba_raw, else BigQuery's)")
    nba_setup.add_argument("--conn-id", default="google_cloud_default")
    nba_setup.set_defaults(func=_nba_setup)

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

    status = sub.add_parser("status", help="freshness and failures per integration; backfill progress with an ETA")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.add_argument("--dsn", help="a libpq DSN instead of the paceline_warehouse connection")
    status.set_defaults(func=_status)

    quota = sub.add_parser("quota", help="per credential: calls in the window, waiting rooms and lanes, next free slot")
    quota.add_argument("--json", action="store_true", help="print one JSON list")
    quota.add_argument("--dsn", help="a libpq DSN instead of the paceline_warehouse connection")
    quota.set_defaults(func=_quota)

    integ = sub.add_parser("integrations", help="registration integrations: list, add, enable, disable, import")
    integ.add_argument("action", choices=["list", "add", "enable", "disable", "import"])
    integ.add_argument("integration_id", nargs="?", help="the integration (add, enable, disable)")
    integ.add_argument("--provider", choices=["runsignup", "haku"], help="add: the provider")
    integ.add_argument("--partner", type=int, help="add: the timing partner id")
    integ.add_argument("--partner-name", help="add: the timing partner's name (kept when omitted)")
    integ.add_argument("--organization", help="add: the organization the credential belongs to")
    integ.add_argument("--conn-id", dest="conn_id_of_integration", help="add: the Airflow connection with the credentials")
    integ.add_argument("--calls-per-hour", type=int, help="add: quota override (default: the provider's)")
    integ.add_argument("--calls-per-second", type=float, help="add: per-second cap")
    integ.add_argument("--sandbox", action="store_true", help="disable: every integration the sandbox registered")
    integ.add_argument("--file", help="import: a JSON file (default config/integrations.json)")
    integ.add_argument("--json", action="store_true", help="list: print JSON")
    integ.add_argument("--dsn", help="a libpq DSN instead of the paceline_warehouse connection")
    integ.set_defaults(func=_integrations)

    sub.add_parser("airflow", help="`airflow ARGS...` with the local stack's settings (var/env)", add_help=False)

    pools = sub.add_parser("pools-file", help="print the path of the pools file (airflow pools import FILE)")
    pools.set_defaults(func=_pools)
    return parser


_RESULTS: list[TextIO] = []  # where a command's own output goes (the real stdout)


def out(text: str) -> None:
    """Print a command's result. Only results reach stdout: whatever a library logs while a
    command runs (Airflow logs to stdout) goes to stderr, so `--json` output stays parseable."""
    print(text, file=_RESULTS[-1] if _RESULTS else sys.stdout)


def main(argv: Sequence[str] | None = None, *, local_env: bool = False) -> int:
    """Run one command; with `local_env` (the `paceline` script, `python -m paceline`), settings the
    environment lacks come from var/env, so every terminal talks to the stack `make run` started."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["airflow"], ["run"]):  # Airflow's own CLI, and `make run`'s stack, print as they will
        return _main(argv, local_env)
    _RESULTS.append(sys.stdout)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return _main(argv, local_env)
    finally:
        _RESULTS.pop()


def _main(argv: list[str], local_env: bool) -> int:
    if local_env and argv[:1] != ["run"]:  # `make run` builds its own settings
        from paceline.ops.localenv import apply_local_env

        apply_local_env()
        use_metadata_connections()  # e.g. google_cloud_default for `nba check`, written by the sandbox
    try:
        if argv[:1] == ["airflow"]:
            return _airflow_passthrough(argv[1:])
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except CommandError as exc:
        print(f"paceline: {exc}", file=sys.stderr)
        return 2


def console() -> None:
    """The `paceline` console script."""
    sys.exit(main(local_env=True))


if __name__ == "__main__":
    sys.exit(main(local_env=True))
