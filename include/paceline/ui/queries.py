"""What the Paceline view shows, as plain dicts (JSON-safe): quota, freshness, racing coverage, NBA.

Each function reads the warehouse (or BigQuery) and returns a dict; the charts in
:mod:`paceline.ui.charts` draw them and the app serves them as JSON too.

Quota has two sources. The limiter's bucket tables (one per credential, see
:mod:`paceline.http.limiter`) hold every call admitted in the credential's current window, and
pyrate deletes older ones, so they tell the live use of the quota but no history. Background
calls are logged a second time in the credential's *pace* bucket, which keeps only the pace's
window (a twelfth of the hour). The history (calls per hour over the last day, scheduled against
background) therefore comes from ``paceline.sync_audit.calls``, each unit's calls spread evenly
over the hours it ran; background = the DAGs whose calls the limiter treats as background.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import psycopg
from psycopg import sql

from paceline.http.limiter import RateSpec, background_pace, bucket_table, pace_key
from paceline.registrations.planning import DEFAULT_TIERS, ProximityTier, tier_for

log = logging.getLogger(__name__)

BACKGROUND_DAGS = ("haku_backfill",)  # the DAGs whose hooks are built with background=True
HISTORY_HOURS = 24
RACING_FIRST_DAY = dt.date(2015, 1, 1)
RACING_TARGET = dt.timedelta(days=1)  # racing_daily loads yesterday's results once a day
RACING_INTEGRATION = "racing_api"

SELECT_INTEGRATIONS = """
SELECT integration_id, provider, timing_partner_id, conn_id, calls_per_hour, calls_per_second, enabled
FROM registrations.provider_integrations
ORDER BY provider, timing_partner_id, integration_id
"""
BUCKET_EXISTS = "SELECT to_regclass(%s) IS NOT NULL"
# Calls in the last `window` seconds, and per minute over the last hour (minute 0 = the current one;
# a call in flight may be logged a moment ahead, see the limiter's settled rates).
BUCKET_WINDOW_COUNT = """
SELECT count(*) FROM {table}
WHERE item_timestamp::timestamptz >= clock_timestamp() - make_interval(secs => %s)
"""
BUCKET_PER_MINUTE = """
SELECT greatest(0, floor(extract(epoch FROM clock_timestamp() - item_timestamp::timestamptz) / 60))::int, count(*)
FROM {table}
WHERE item_timestamp::timestamptz >= clock_timestamp() - interval '60 minutes'
GROUP BY 1
"""
# Each unit's calls spread evenly over the hours between its start and its end.
AUDIT_CALLS_PER_HOUR = """
WITH hours AS (
    SELECT generate_series(date_trunc('hour', %(now)s::timestamptz) - make_interval(hours => %(hours)s - 1),
                           date_trunc('hour', %(now)s::timestamptz), interval '1 hour') AS h
),
units AS (
    SELECT provider, integration_id, calls, started_at,
           greatest(finished_at, started_at + interval '1 second') AS finished_at,
           coalesce(dag_id = ANY(%(background_dags)s), false) AS background
    FROM paceline.sync_audit
    WHERE calls > 0
      AND finished_at >= date_trunc('hour', %(now)s::timestamptz) - make_interval(hours => %(hours)s - 1)
)
SELECT u.provider, u.integration_id, h.h, u.background,
       sum(u.calls * extract(epoch FROM least(u.finished_at, h.h + interval '1 hour') - greatest(u.started_at, h.h))
           / extract(epoch FROM u.finished_at - u.started_at))::float8
FROM units u JOIN hours h ON u.started_at < h.h + interval '1 hour' AND u.finished_at > h.h
GROUP BY 1, 2, 3, 4
"""
SELECT_HOURS = """
SELECT generate_series(date_trunc('hour', %(now)s::timestamptz) - make_interval(hours => %(hours)s - 1),
                       date_trunc('hour', %(now)s::timestamptz), interval '1 hour')
"""
# Every event of every integration with its last sync (the watermark the planners read).
EVENT_SYNC_TIMES = """
SELECT e.integration_id, e.start_time::date, w.updated_at
FROM registrations.runsignup_events e
LEFT JOIN paceline.watermarks w
  ON w.integration_id = e.integration_id AND w.scope = 'event:' || e.race_id || ':' || e.event_id
UNION ALL
SELECT e.integration_id, e.event_date, w.updated_at
FROM registrations.haku_events e
LEFT JOIN paceline.watermarks w ON w.integration_id = e.integration_id AND w.scope = 'event:' || e.event_id
"""
LAST_SUCCESS = """
SELECT integration_id, max(finished_at) FROM paceline.sync_audit
WHERE status = 'success' AND integration_id IS NOT NULL GROUP BY integration_id
"""
RECENT_FAILURES = """
SELECT integration_id, count(*) FROM paceline.sync_audit
WHERE status = 'failed' AND finished_at >= %s AND integration_id IS NOT NULL GROUP BY integration_id
"""
RACING_LAST_LOAD = """
SELECT max(finished_at) FROM paceline.sync_audit
WHERE provider = 'racing_api' AND status = 'success' AND sync_type IN ('day', 'results')
"""


def _iso(value: dt.datetime | dt.date | None) -> str | None:
    return value.isoformat() if value is not None else None


# ---------------------------------------------------------------------------------------------
# Quota


def _identity(provider: str, conn_id: str, calls_per_hour: int | None, calls_per_second: float | None) -> dict[str, Any]:
    """The limiter key's bucket tables and the rates of one credential, as the hooks build them.

    The key contains the credential's login, so only its hashed table names leave this function.
    """
    from paceline.providers.haku.hook import HakuHook
    from paceline.providers.racing_api.hook import RacingApiHook
    from paceline.providers.runsignup.hook import RunSignUpHook

    if provider == "runsignup":
        hook = RunSignUpHook(conn_id, calls_per_hour=calls_per_hour, calls_per_second=calls_per_second, use_limiter=False)
    elif provider == "haku":
        hook = HakuHook(conn_id, calls_per_hour=calls_per_hour, calls_per_second=calls_per_second, use_limiter=False)
    else:
        hook = RacingApiHook(conn_id, use_limiter=False)
    rates: tuple[RateSpec, ...] = tuple(hook.rates)
    try:
        key = hook.limiter_key
    except Exception as exc:  # a missing connection: show the integration, say why it has no data
        return {"table": None, "pace_table": None, "rates": rates, "error": f"connection {conn_id!r}: {type(exc).__name__}"}
    pace = background_pace(rates)
    return {
        "table": bucket_table(key),
        "pace_table": bucket_table(pace_key(key)) if pace else None,
        "rates": rates,
        "pace": pace,
        "error": None,
    }


def _bucket_counts(conn: psycopg.Connection, table: str | None, window_s: float) -> tuple[int, list[int]] | None:
    """(calls in the last window_s seconds, calls per minute over the last hour, oldest first)."""
    if table is None:
        return None
    full = f"ratelimit___{table}"  # pyrate's prefix
    row = conn.execute(BUCKET_EXISTS, (full,)).fetchone()
    if not row or not row[0]:
        return 0, [0] * 60
    ident = sql.Identifier(full)
    (in_window,) = conn.execute(sql.SQL(BUCKET_WINDOW_COUNT).format(table=ident), (window_s,)).fetchone() or (0,)
    per_minute = [0] * 60
    for minutes_ago, count in conn.execute(sql.SQL(BUCKET_PER_MINUTE).format(table=ident)).fetchall():
        if 0 <= minutes_ago < 60:
            per_minute[59 - minutes_ago] = int(count)
    return int(in_window), per_minute


def quota(dsn: str, *, now: dt.datetime | None = None, hours: int = HISTORY_HOURS) -> dict[str, Any]:
    """Per credential: live use of its quota window (limiter buckets) and calls per hour (audit)."""
    now = now or dt.datetime.now(dt.UTC)
    with psycopg.connect(dsn, autocommit=True) as conn:
        integrations = conn.execute(SELECT_INTEGRATIONS).fetchall()
        credentials: dict[str, dict[str, Any]] = {}
        owner: dict[tuple[str, str | None], str] = {}  # (provider, integration_id) -> credential id
        sources = [(p, i, tp, c, cph, cps, en) for i, p, tp, c, cph, cps, en in integrations]
        sources.append(("racing_api", RACING_INTEGRATION, None, RACING_INTEGRATION, None, None, True))
        for provider, integration_id, _tp, conn_id, cph, cps, enabled in sources:
            ident = _identity(provider, conn_id, cph, cps)
            cid = ident["table"] or f"{provider}:{conn_id}"
            cred = credentials.setdefault(
                cid,
                {
                    "id": cid,
                    "provider": provider,
                    "conn_ids": [],
                    "integrations": [],
                    "enabled": False,
                    "rates": [{"limit": r.limit, "per_seconds": r.per_seconds} for r in ident["rates"]],
                    "error": ident["error"],
                    "_ident": ident,
                },
            )
            if conn_id not in cred["conn_ids"]:
                cred["conn_ids"].append(conn_id)
            cred["integrations"].append(integration_id)
            cred["enabled"] = cred["enabled"] or bool(enabled)
            owner[(provider, integration_id if provider != "racing_api" else None)] = cid

        for cred in credentials.values():
            ident = cred.pop("_ident")
            rates: tuple[RateSpec, ...] = ident["rates"]
            longest = max(rates, key=lambda r: r.per_seconds, default=None)
            counts = _bucket_counts(conn, ident["table"], longest.per_seconds if longest else 60.0)
            cred["window"] = (
                {"calls": counts[0], "limit": longest.limit, "per_seconds": longest.per_seconds}
                if counts and longest
                else None
            )
            cred["per_minute"] = counts[1] if counts else [0] * 60
            pace = ident.get("pace") or ()
            pace_counts = _bucket_counts(conn, ident["pace_table"], pace[0].per_seconds) if pace else None
            cred["background_window"] = (
                {"calls": pace_counts[0], "limit": pace[0].limit, "per_seconds": pace[0].per_seconds}
                if pace_counts
                else None
            )
            hourly = [r for r in rates if r.per_seconds > 60]
            cred["hourly_limit"] = min((r.limit for r in hourly), default=None)
            cred["hours"] = []

        params = {"now": now, "hours": hours, "background_dags": list(BACKGROUND_DAGS)}
        hour_starts = [h for (h,) in conn.execute(SELECT_HOURS, params).fetchall()]
        series: dict[str, dict[dt.datetime, list[float]]] = defaultdict(lambda: {h: [0.0, 0.0] for h in hour_starts})
        for provider, integration_id, hour, background, calls in conn.execute(AUDIT_CALLS_PER_HOUR, params).fetchall():
            cid = owner.get((provider, integration_id if provider != "racing_api" else None))
            if cid is None:
                continue  # an integration since deleted
            series[cid][hour][1 if background else 0] += calls
    for cid, cred in credentials.items():
        by_hour = series.get(cid) or {h: [0.0, 0.0] for h in hour_starts}
        cred["hours"] = [
            {"hour": _iso(h), "scheduled": round(v[0], 1), "background": round(v[1], 1)} for h, v in sorted(by_hour.items())
        ]
    return {
        "now": _iso(now),
        "hours": hours,
        "background_dags": list(BACKGROUND_DAGS),
        "credentials": sorted(credentials.values(), key=lambda c: (c["provider"], c["integrations"])),
    }


# ---------------------------------------------------------------------------------------------
# Freshness


def freshness(
    dsn: str, *, now: dt.datetime | None = None, tiers: Sequence[ProximityTier] = DEFAULT_TIERS
) -> dict[str, Any]:
    """Per integration: its events counted by how their last sync compares with their tier's target.

    ``fresh``: synced within the target; ``late``: within twice the target; ``stale``: longer ago;
    ``never``: not synced yet. The racing feed is one more row, with a daily target.
    """
    now = now or dt.datetime.now(dt.UTC)
    today = now.date()
    with psycopg.connect(dsn, autocommit=True) as conn:
        integrations = conn.execute(SELECT_INTEGRATIONS).fetchall()
        events = conn.execute(EVENT_SYNC_TIMES).fetchall()
        last_success = dict(conn.execute(LAST_SUCCESS).fetchall())
        failures = dict(conn.execute(RECENT_FAILURES, (now - dt.timedelta(hours=HISTORY_HOURS),)).fetchall())
        (racing_last,) = conn.execute(RACING_LAST_LOAD).fetchone() or (None,)

    rows: dict[str, dict[str, Any]] = {}
    for integration_id, provider, tp, _conn_id, _cph, _cps, enabled in integrations:
        rows[integration_id] = {
            "integration_id": integration_id,
            "provider": provider,
            "timing_partner_id": tp,
            "enabled": bool(enabled),
            "events": 0,
            "fresh": 0,
            "late": 0,
            "stale": 0,
            "never": 0,
            "worst_ratio": None,
            "target_s": None,  # the tightest target among its events
            "last_success": _iso(last_success.get(integration_id)),
            "failures_24h": int(failures.get(integration_id, 0)),
        }
    for integration_id, event_date, synced_at in events:
        row = rows.get(integration_id)
        if row is None:
            continue
        row["events"] += 1
        target = tier_for(event_date or today, today, tiers).every
        row["target_s"] = min(row["target_s"] or target.total_seconds(), target.total_seconds())
        if synced_at is None:
            row["never"] += 1
            continue
        ratio = (now - synced_at).total_seconds() / target.total_seconds()
        row["worst_ratio"] = max(row["worst_ratio"] or 0.0, round(ratio, 3))
        row["fresh" if ratio <= 1 else "late" if ratio <= 2 else "stale"] += 1

    racing_ratio = (now - racing_last).total_seconds() / RACING_TARGET.total_seconds() if racing_last else None
    racing = {
        "integration_id": RACING_INTEGRATION,
        "provider": "racing_api",
        "timing_partner_id": None,
        "enabled": True,
        "events": 1,
        "fresh": int(racing_ratio is not None and racing_ratio <= 1),
        "late": int(racing_ratio is not None and 1 < racing_ratio <= 2),
        "stale": int(racing_ratio is not None and racing_ratio > 2),
        "never": int(racing_ratio is None),
        "worst_ratio": round(racing_ratio, 3) if racing_ratio is not None else None,
        "target_s": RACING_TARGET.total_seconds(),
        "last_success": _iso(racing_last),
        "failures_24h": 0,
    }
    return {
        "now": _iso(now),
        "tiers": [{"within_days": t.within_days, "every_s": t.every.total_seconds()} for t in tiers],
        "integrations": [*rows.values(), racing],
    }


# ---------------------------------------------------------------------------------------------
# Racing coverage


def racing_calendar(dsn: str, *, start: dt.date = RACING_FIRST_DAY, today: dt.date | None = None) -> dict[str, Any]:
    """One entry per day from `start` to today: its state for the calendar, from racing.coverage."""
    from paceline.racing.coverage import coverage

    today = today or dt.datetime.now(dt.UTC).date()
    report = coverage(dsn, start, today, today=today)
    days = []
    counts: dict[str, int] = defaultdict(int)
    for d in report:
        flags = d["flags"]
        if "races_without_runners" in flags:
            state = "runners_missing"
        elif "not_loaded" in flags:
            state = "not_loaded"
        elif "no_meetings" in flags:
            state = "no_meetings"
        elif d["races"] == 0:
            state = "no_racing"  # loaded, and no racing was expected (24-25 December)
        else:
            state = "loaded"
        counts[state] += 1
        days.append({"day": d["day"], "state": state, "races": d["races"], "runners": d["runners"]})
    return {"start": start.isoformat(), "end": today.isoformat(), "days": days, "counts": dict(counts)}


# ---------------------------------------------------------------------------------------------
# NBA

NULL_SHARE_BY_DAY = """
SELECT game_date, COUNT(*) AS total_rows, COUNTIF(minutes_played IS NULL) AS null_rows,
       SAFE_DIVIDE(COUNTIF(minutes_played IS NULL), COUNT(*)) AS null_share
FROM nba_analytics.player_game_summary
GROUP BY game_date
ORDER BY game_date
"""
BQ_TIMEOUT_S = 20.0


def _null_share_rows(client: Any, timeout_s: float) -> list[dict[str, Any]]:
    return [
        {
            "day": _iso(row["game_date"]),
            "rows": int(row["total_rows"]),
            "null_rows": int(row["null_rows"]),
            "null_share": float(row["null_share"] or 0.0),
        }
        for row in client.query(NULL_SHARE_BY_DAY, timeout_s=timeout_s).rows
    ]


_bq_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="paceline-ui-bq")


def nba_null_share(client: Any = None, *, conn_id: str | None = None, timeout_s: float = BQ_TIMEOUT_S) -> dict[str, Any]:
    """The NULL minutes_played share per game day against the quality band; never raises.

    `client`: a :class:`paceline.providers.bigquery.BigQueryClient`, or None for the connection
    `conn_id`'s (one try per call: the page does not wait out retries). When BigQuery cannot be
    read within `timeout_s`, ``error`` says why and ``days`` is empty.
    """
    from paceline.config import GOOGLE_CONN_ID
    from paceline.nba.quality import DAY_MAX_NULL_SHARE, DEFAULT_BAND

    result: dict[str, Any] = {"band": list(DEFAULT_BAND), "day_max": DAY_MAX_NULL_SHARE, "days": [], "error": None}
    try:
        if client is None:
            from paceline.http.session import RetryPolicy
            from paceline.providers.bigquery import BigQueryRestHook

            # one try, and a throttle is not waited out longer than the page waits
            retry = RetryPolicy(attempts=0, throttle_max_wait_s=timeout_s)
            hook = BigQueryRestHook(conn_id or GOOGLE_CONN_ID, retry=retry, timeout=(3.0, timeout_s))
            client = hook.get_client()
        # A thread of its own with a hard limit: an unreachable endpoint must not hold the page.
        result["days"] = _bq_pool.submit(_null_share_rows, client, timeout_s).result(timeout=timeout_s + 5)
    except FutureTimeout:
        result["error"] = f"BigQuery did not answer within {timeout_s + 5:.0f} s"
    except Exception as exc:  # the page must render whatever BigQuery does
        log.warning("NBA NULL share: BigQuery not readable: %s", exc)
        # the endpoint without its scheme: the page links nowhere
        result["error"] = f"BigQuery not readable: {type(exc).__name__}: {re.sub(r'https?://', '', str(exc))[:200]}"
    return result
