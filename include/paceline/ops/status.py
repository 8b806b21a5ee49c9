"""`paceline status`: how fresh each integration is, what failed lately, how far backfills have come.

Everything is read from the warehouse: ``paceline.sync_audit`` (one row per unit of work and
attempt, with its dag and run ids), the registration events (their dates set each integration's
proximity tier) and the racing days loaded. Plain dicts, JSON-safe, for the CLI and the UI plugin.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Sequence
from typing import Any

import psycopg

from paceline.registrations.planning import DEFAULT_TIERS, ProximityTier, tier_for

RACING_PROVIDER = "racing_api"
RACING_FIRST_DAY = dt.date(2015, 1, 1)
RACING_TARGET = dt.timedelta(days=1)  # racing_daily loads yesterday's results once a day
SCHEDULE_SLACK = dt.timedelta(minutes=15)  # the sync DAGs run every 15 minutes
PACE_WINDOW = dt.timedelta(hours=1)  # backfill ETAs extrapolate the pace of the last hour
NON_SYNC_UNITS = ("plan", "estimate")  # audit rows of a plan or a size estimate, not a synced unit

SELECT_INTEGRATIONS = """
SELECT integration_id, provider, timing_partner_id, enabled
FROM registrations.provider_integrations
ORDER BY provider, timing_partner_id, integration_id
"""
# The nearest event date of each integration, past or future (a recent past event still changes).
NEAREST_EVENT_DAYS = """
SELECT integration_id, min(abs(d - %(today)s::date)) FROM (
    SELECT integration_id, start_time::date AS d FROM registrations.runsignup_events
    UNION ALL
    SELECT integration_id, event_date AS d FROM registrations.haku_events
) events
WHERE d IS NOT NULL
GROUP BY integration_id
"""
LAST_SUCCESS = """
SELECT coalesce(integration_id, provider), max(finished_at)
FROM paceline.sync_audit
WHERE status = 'success' AND unit <> ALL(%(skip)s)
GROUP BY 1
"""
# The last runs of each integration (or provider, for racing): units and failures per run.
LAST_RUNS = """
SELECT who, dag_id, run_id, finished_at, units, failed, last_error FROM (
    SELECT coalesce(integration_id, provider) AS who, dag_id, run_id, max(finished_at) AS finished_at,
           count(DISTINCT unit) AS units,
           count(DISTINCT unit) FILTER (WHERE status = 'failed') AS failed,
           (array_agg(error ORDER BY finished_at DESC) FILTER (WHERE status = 'failed'))[1] AS last_error,
           row_number() OVER (PARTITION BY coalesce(integration_id, provider) ORDER BY max(finished_at) DESC) AS n
    FROM paceline.sync_audit
    WHERE run_id IS NOT NULL
    GROUP BY coalesce(integration_id, provider), dag_id, run_id
) runs
WHERE n <= %(runs)s
ORDER BY who, finished_at DESC
"""
# Racing days loaded (a successful day unit), and when each was first loaded.
RACING_DAYS_LOADED = """
SELECT unit, min(finished_at)
FROM paceline.sync_audit
WHERE provider = %(provider)s AND status = 'success' AND unit ~ '^\\d{4}-\\d{2}-\\d{2}$'
GROUP BY unit
"""
LATEST_RUN_OF_DAG = """
SELECT run_id, min(started_at), max(finished_at)
FROM paceline.sync_audit WHERE dag_id = %(dag_id)s AND run_id IS NOT NULL
GROUP BY run_id ORDER BY max(finished_at) DESC LIMIT 1
"""
HAKU_BACKFILL_ESTIMATE = """
SELECT coalesce(sum(estimated_size), 0), count(*)
FROM (SELECT DISTINCT ON (integration_id) estimated_size FROM paceline.sync_audit
      WHERE dag_id = %(dag_id)s AND run_id = %(run_id)s AND unit = 'estimate'
      ORDER BY integration_id, finished_at DESC) latest
"""
# Each event of the run once: its last successful row (a cleared task writes another).
HAKU_BACKFILL_DONE = """
SELECT count(*), coalesce(sum(actual_size), 0), coalesce(sum(actual_size) FILTER (WHERE finished_at >= %(since)s), 0),
       coalesce(sum(calls), 0)
FROM (SELECT DISTINCT ON (integration_id, unit) actual_size, finished_at, calls FROM paceline.sync_audit
      WHERE dag_id = %(dag_id)s AND run_id = %(run_id)s AND status = 'success' AND unit <> ALL(%(skip)s)
      ORDER BY integration_id, unit, finished_at DESC) done
"""
HAKU_BACKFILL_FAILED = """
SELECT count(DISTINCT (integration_id, unit)) FROM paceline.sync_audit f
WHERE dag_id = %(dag_id)s AND run_id = %(run_id)s AND status = 'failed' AND unit <> ALL(%(skip)s)
  AND NOT EXISTS (SELECT 1 FROM paceline.sync_audit s WHERE s.dag_id = f.dag_id AND s.run_id = f.run_id
                  AND s.integration_id IS NOT DISTINCT FROM f.integration_id AND s.unit = f.unit
                  AND s.status = 'success' AND s.finished_at > f.finished_at)
"""


def _now(now: dt.datetime | None) -> dt.datetime:
    return now or dt.datetime.now(dt.UTC)


def _iso(value: dt.datetime | dt.date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _eta(remaining: float, per_hour: float, now: dt.datetime) -> dict[str, Any]:
    if remaining <= 0:
        return {"eta": None, "eta_hours": 0.0}
    if per_hour <= 0:
        return {"eta": None, "eta_hours": None}  # no progress in the last hour: no honest estimate
    hours = remaining / per_hour
    return {"eta": _iso(now + dt.timedelta(hours=hours)), "eta_hours": round(hours, 2)}


def _freshness(last: dt.datetime | None, target: dt.timedelta, now: dt.datetime) -> dict[str, Any]:
    age = (now - last) if last is not None else None
    if age is None:
        state = "never"
    elif age <= target + SCHEDULE_SLACK:
        state = "fresh"
    else:
        state = "stale"
    return {
        "last_success_at": _iso(last),
        "age_s": round(age.total_seconds()) if age is not None else None,
        "target_s": round(target.total_seconds()),
        "state": state,
    }


def _runs(rows: Sequence[tuple]) -> list[dict[str, Any]]:
    return [
        {"dag_id": dag_id, "run_id": run_id, "finished_at": _iso(finished), "units": units, "failed": failed,
         "last_error": (error or "")[:300] or None}
        for _, dag_id, run_id, finished, units, failed, error in rows
    ]  # fmt: skip


def integration_status(
    conn: psycopg.Connection,
    *,
    now: dt.datetime | None = None,
    runs: int = 5,
    tiers: Sequence[ProximityTier] = DEFAULT_TIERS,
) -> list[dict[str, Any]]:
    """Per integration (and The Racing API): last successful sync, its age against the target of
    the most urgent proximity tier among its events, and its last `runs` runs with their failures."""
    now = _now(now)
    nearest = dict(conn.execute(NEAREST_EVENT_DAYS, {"today": now.date()}).fetchall())
    last = dict(conn.execute(LAST_SUCCESS, {"skip": list(NON_SYNC_UNITS)}).fetchall())
    by_who: dict[str, list[tuple]] = {}
    for row in conn.execute(LAST_RUNS, {"runs": runs}).fetchall():
        by_who.setdefault(row[0], []).append(row)
    out = []
    for integration_id, provider, partner, enabled in conn.execute(SELECT_INTEGRATIONS).fetchall():
        days = nearest.get(integration_id)
        tier = tier_for(now.date() + dt.timedelta(days=days), now.date(), tiers) if days is not None else tiers[-1]
        recent = _runs(by_who.get(integration_id, []))
        out.append({
            "integration_id": integration_id, "provider": provider, "timing_partner_id": partner, "enabled": enabled,
            "nearest_event_days": days,
            **_freshness(last.get(integration_id), tier.every, now),
            "runs": recent, "failed_runs": sum(1 for r in recent if r["failed"]),
        })  # fmt: skip
    recent = _runs(by_who.get(RACING_PROVIDER, []))
    out.append({
        "integration_id": RACING_PROVIDER, "provider": RACING_PROVIDER, "timing_partner_id": None, "enabled": True,
        "nearest_event_days": None,
        **_freshness(last.get(RACING_PROVIDER), RACING_TARGET, now),
        "runs": recent, "failed_runs": sum(1 for r in recent if r["failed"]),
    })  # fmt: skip
    return out


def racing_progress(
    conn: psycopg.Connection, *, now: dt.datetime | None = None, start: dt.date = RACING_FIRST_DAY
) -> dict[str, Any]:
    """Racing history since `start`: days and whole months loaded, the pace of the last hour, an ETA."""
    now = _now(now)
    today = now.date()
    loaded: dict[dt.date, dt.datetime] = {}
    for unit, first in conn.execute(RACING_DAYS_LOADED, {"provider": RACING_PROVIDER}).fetchall():
        day = dt.date.fromisoformat(unit)
        if start <= day <= today:
            loaded[day] = first
    total_days = (today - start).days + 1
    months_total = months_done = 0
    year, month = start.year, start.month
    while (year, month) <= (today.year, today.month):
        last_day = min(dt.date(year, month, calendar.monthrange(year, month)[1]), today)
        first_day = max(dt.date(year, month, 1), start)
        months_total += 1
        if all(first_day + dt.timedelta(days=i) in loaded for i in range((last_day - first_day).days + 1)):
            months_done += 1
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    recent = sum(1 for first in loaded.values() if first >= now - PACE_WINDOW)
    per_hour = recent / (PACE_WINDOW.total_seconds() / 3600)
    return {
        "name": "racing_events",
        "from": _iso(start), "to": _iso(today),
        "days_done": len(loaded), "days_total": total_days,
        "months_done": months_done, "months_total": months_total,
        "done_share": round(len(loaded) / total_days, 4) if total_days else 1.0,
        "days_per_hour": round(per_hour, 2),
        **_eta(total_days - len(loaded), per_hour, now),
    }  # fmt: skip


def haku_backfill_progress(
    conn: psycopg.Connection, *, now: dt.datetime | None = None, dag_id: str = "haku_backfill"
) -> dict[str, Any] | None:
    """The latest haku_backfill run: registrations synced against the plan's estimate, events done
    and failed, the pace of the last hour and an ETA; None when it never ran."""
    now = _now(now)
    latest = conn.execute(LATEST_RUN_OF_DAG, {"dag_id": dag_id}).fetchone()
    if latest is None:
        return None
    run_id, started, last_activity = latest
    params = {"dag_id": dag_id, "run_id": run_id, "skip": list(NON_SYNC_UNITS), "since": now - PACE_WINDOW}
    estimated, integrations = conn.execute(HAKU_BACKFILL_ESTIMATE, params).fetchone()
    events, registrations, recent, calls = conn.execute(HAKU_BACKFILL_DONE, params).fetchone()
    (failed,) = conn.execute(HAKU_BACKFILL_FAILED, params).fetchone()
    per_hour = recent / (PACE_WINDOW.total_seconds() / 3600)
    return {
        "name": dag_id, "run_id": run_id, "started_at": _iso(started), "last_activity_at": _iso(last_activity),
        "integrations": integrations, "events_done": events, "events_failed": failed,
        "registrations_done": int(registrations), "registrations_estimated": int(estimated),
        "done_share": round(min(registrations / estimated, 1.0), 4) if estimated else None,
        "calls": int(calls), "registrations_per_hour": round(per_hour, 1),
        **_eta(max(int(estimated) - int(registrations), 0), per_hour, now),
    }  # fmt: skip


def backfill_progress(conn: psycopg.Connection, *, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Progress of the long backfills: racing history since 2015, and the latest Haku backfill."""
    out = [racing_progress(conn, now=now)]
    haku = haku_backfill_progress(conn, now=now)
    if haku is not None:
        out.append(haku)
    return out


def status_report(conn: psycopg.Connection, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """What `paceline status --json` prints."""
    return {
        "generated_at": _iso(_now(now)),
        "integrations": integration_status(conn, now=now),
        "backfills": backfill_progress(conn, now=now),
    }
