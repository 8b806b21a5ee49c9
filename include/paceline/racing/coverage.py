"""Coverage of the racing tables, per day: what replaced the old backfill's "check status".

For each day of a range: races, runners, abandoned races, races without runners, whether the
day is loaded (its last ``racing_api`` audit row is a success) and the flags below.

Flags:
- ``not_loaded``: the day's last load did not succeed (its task failed, or never ran). Only the
  last load counts: a day loaded once and failed since (a revoked key, pages that stayed empty)
  is not loaded until a load succeeds again, since what it holds may be stale or partial;
- ``races_without_runners``: a race that is not abandoned has no runner rows;
- ``no_meetings``: the day has no races although meetings are expected. The rule is kept simple:
  GB and Irish racing is expected on every day except 24 and 25 December (the only days with
  no racing in both countries; Good Friday has had racing in GB since 2014 and in Ireland since
  2018). Future days and days after the last loaded results are not flagged.

:func:`failures` picks the flags that should fail a run: ``not_loaded`` and
``races_without_runners`` (the data or the load is wrong and re-running can fix it). A
``no_meetings`` day that was loaded is the API's own answer (racing abandoned for weather, or a
gap at the provider): it is reported and logged as a warning, but re-running cannot change it,
so it does not fail the run.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

from paceline.db.warehouse import connect

log = logging.getLogger(__name__)

COVERAGE_SQL = """
WITH days AS (
    SELECT d::date AS day FROM generate_series(%(start)s::date, %(end)s::date, interval '1 day') AS d
),
race_counts AS (
    SELECT r.race_date AS day,
           count(*) AS races,
           count(*) FILTER (WHERE r.is_abandoned) AS abandoned,
           count(*) FILTER (WHERE r.has_result) AS with_result,
           count(*) FILTER (WHERE NOT EXISTS (
               SELECT 1 FROM racing.ra_runners u WHERE u.race_id = r.race_id)) AS without_runners,
           count(*) FILTER (WHERE NOT r.is_abandoned AND NOT EXISTS (
               SELECT 1 FROM racing.ra_runners u WHERE u.race_id = r.race_id)) AS unexplained_without_runners
    FROM racing.ra_races r
    WHERE r.race_date BETWEEN %(start)s AND %(end)s
    GROUP BY r.race_date
),
runner_counts AS (
    SELECT race_date AS day, count(*) AS runners
    FROM racing.ra_runners
    WHERE race_date BETWEEN %(start)s AND %(end)s
    GROUP BY race_date
),
last_loads AS (
    -- each day's LAST load, whatever its outcome: a later failed load outranks an earlier success
    SELECT DISTINCT ON (unit) unit, status, finished_at, error
    FROM paceline.sync_audit
    WHERE provider = 'racing_api' AND unit ~ '^\\d{4}-\\d{2}-\\d{2}$'
      AND unit BETWEEN to_char(%(start)s::date, 'YYYY-MM-DD') AND to_char(%(end)s::date, 'YYYY-MM-DD')
    ORDER BY unit, finished_at DESC, audit_id DESC
)
SELECT d.day,
       coalesce(rc.races, 0), coalesce(ru.runners, 0), coalesce(rc.abandoned, 0),
       coalesce(rc.with_result, 0), coalesce(rc.without_runners, 0),
       coalesce(rc.unexplained_without_runners, 0), l.status, l.finished_at, l.error
FROM days d
LEFT JOIN race_counts rc ON rc.day = d.day
LEFT JOIN runner_counts ru ON ru.day = d.day
LEFT JOIN last_loads l ON l.unit = to_char(d.day, 'YYYY-MM-DD')
ORDER BY d.day
"""

FAILING_FLAGS = ("not_loaded", "races_without_runners")


def meetings_expected(day: date) -> bool:
    """GB/IRE racing is expected every day but 24 and 25 December (see the module docstring)."""
    return not (day.month == 12 and day.day in (24, 25))


def _as_date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def coverage(
    dsn: str | None, start: date | str, end: date | str, *, today: date | None = None
) -> list[dict[str, Any]]:
    """Per day of [start, end]: counts and flags (see the module docstring). `dsn` None: Airflow's."""
    start, end = _as_date(start), _as_date(end)
    today = today or datetime.now(UTC).date()
    with connect(dsn) as conn:
        rows = conn.execute(COVERAGE_SQL, {"start": start, "end": end}).fetchall()
    report = []
    for day, races, runners, abandoned, with_result, without, unexplained, status, last_at, error in rows:
        # Loaded only when the day's last load succeeded: a success row is written in the same
        # transaction as the day's rows, and only once every page was read (see load.py).
        loaded_at = last_at if status == "success" else None
        flags = []
        if loaded_at is None:
            flags.append("not_loaded")
        if unexplained:
            flags.append("races_without_runners")
        if races == 0 and meetings_expected(day) and day < today and loaded_at is not None:
            flags.append("no_meetings")
        report.append(
            {
                "day": day.isoformat(),
                "races": races,
                "runners": runners,
                "abandoned": abandoned,
                "races_with_result": with_result,
                "races_without_runners": without,
                "unexplained_races_without_runners": unexplained,
                "loaded_at": loaded_at.isoformat() if loaded_at else None,
                "last_load": _last_load(status, last_at, error),
                "meetings_expected": meetings_expected(day),
                "flags": flags,
            }
        )
    return report


def _last_load(status: str | None, at: datetime | None, error: str | None) -> dict[str, Any] | None:
    if status is None or at is None:
        return None
    return {"status": status, "at": at.isoformat(), "error": error}


def failures(report: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in report if any(f in FAILING_FLAGS for f in d["flags"])]


def format_report(report: list[dict[str, Any]]) -> str:
    lines = [f"{'day':<10} {'races':>5} {'runners':>7} {'aband':>5} {'no-run':>6}  flags"]
    for d in report:
        lines.append(
            f"{d['day']:<10} {d['races']:>5} {d['runners']:>7} {d['abandoned']:>5} "
            f"{d['races_without_runners']:>6}  {','.join(d['flags'])}{_failed_note(d)}"
        )
    return "\n".join(lines)


def _failed_note(entry: dict[str, Any]) -> str:
    last = entry.get("last_load")
    if not last or last["status"] == "success":
        return ""
    return f" (last load {last['status']} at {last['at'][:19]}: {(last['error'] or '')[:120]})"


def month_days(start: date | str, end_exclusive: date | str) -> list[str]:
    """The days of a data interval [start, end) as YYYY-MM-DD strings (what a monthly run maps over)."""
    first, stop = _as_date(start), _as_date(end_exclusive)
    return [(first + timedelta(days=i)).isoformat() for i in range((stop - first).days)]


def main(argv: list[str] | None = None) -> int:
    """``python -m paceline.racing.coverage --start 2024-01-01 --end 2024-01-31 [--dsn ...] [--json]``.

    Exit status 1 when a day has a failing flag (not loaded, races without runners).
    """
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Per-day coverage of the racing tables")
    parser.add_argument("--start", required=True, type=date.fromisoformat)
    parser.add_argument("--end", required=True, type=date.fromisoformat)
    parser.add_argument("--dsn", default=None, help="libpq DSN (default: the paceline_warehouse connection)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = coverage(args.dsn, args.start, args.end)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 1 if failures(report) else 0


if __name__ == "__main__":
    raise SystemExit(main())
