"""`paceline quota`: how much of each credential's quota is in use, and who is waiting for it.

The figures come from the shared limiter's own state (:mod:`paceline.http.limiter`): one pyrate
bucket table per credential holds every call admitted in its current window; background
(backfill) calls are logged a second time in the credential's *pace* bucket, which keeps the
pace's window (a twelfth of the hour); the waiting rooms and the lane are PostgreSQL advisory
locks, visible in ``pg_locks`` with the backend that holds them. Credentials appear by
integration and connection id: their keys contain logins, so only hashed names touch the database.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from paceline.http.limiter import (
    LANE_DONE_AT,
    RateSpec,
    background_pace,
    bucket_table,
    lane_done_at,
    lane_id,
    pace_key,
    pg_locks_key,
    waiting_room_id,
)

BUCKET_PREFIX = "ratelimit___"  # pyrate's table prefix
BUCKET_EXISTS = "SELECT to_regclass(%s) IS NOT NULL"
DATABASE_NOW = "SELECT clock_timestamp()"
# Calls in the last `window` seconds, and when the `offset`-th newest call was made (the call
# that must leave the window before one more fits, when offset = limit - 1).
WINDOW_COUNT = """
SELECT count(*) FILTER (WHERE item_timestamp::timestamptz >= clock_timestamp() - make_interval(secs => %(window)s)),
       (SELECT item_timestamp::timestamptz FROM {table} ORDER BY item_timestamp DESC OFFSET %(offset)s LIMIT 1)
FROM {table}
"""
# An advisory lock on a bigint key shows in pg_locks as (classid, objid) = (high, low) 32 bits, objsubid 1.
ADVISORY_LOCK_HOLDERS = """
SELECT l.granted, l.pid, a.application_name, a.query_start, a.backend_start
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.classid::bigint = %s AND l.objid::bigint = %s AND l.objsubid = 1
ORDER BY l.granted DESC, a.query_start
"""
SELECT_INTEGRATIONS = """
SELECT integration_id, provider, conn_id, calls_per_hour, calls_per_second, enabled
FROM registrations.provider_integrations
ORDER BY provider, integration_id
"""


@dataclass
class Credential:
    """One limiter key: its label (never the login), its rates and who uses it."""

    label: str
    provider: str
    key: str = field(repr=False)  # contains the login: never printed, only hashed
    rates: tuple[RateSpec, ...]
    integrations: list[str] = field(default_factory=list)
    error: str | None = None


def _hook_for(provider: str, conn_id: str, calls_per_hour: int | None, calls_per_second: float | None) -> Any:
    if provider == "runsignup":
        from paceline.providers.runsignup.hook import RunSignUpHook

        return RunSignUpHook(conn_id, calls_per_hour=calls_per_hour, calls_per_second=calls_per_second, use_limiter=False)
    if provider == "haku":
        from paceline.providers.haku.hook import HakuHook

        return HakuHook(conn_id, calls_per_hour=calls_per_hour, calls_per_second=calls_per_second, use_limiter=False)
    from paceline.providers.racing_api.hook import RacingApiHook

    return RacingApiHook(conn_id, use_limiter=False)


def known_credentials(conn: psycopg.Connection, racing_conn_id: str = "racing_api") -> list[Credential]:
    """The credentials of every enabled integration and of The Racing API, keyed as the hooks key
    them (reading the Airflow connections); integrations sharing a login share one credential."""
    wanted = [
        (provider, conn_id, per_hour, per_second, integration_id)
        for integration_id, provider, conn_id, per_hour, per_second, enabled in conn.execute(SELECT_INTEGRATIONS).fetchall()
        if enabled
    ]
    wanted.append(("racing_api", racing_conn_id, None, None, None))
    by_key: dict[str, Credential] = {}
    out: list[Credential] = []
    for provider, conn_id, per_hour, per_second, integration_id in wanted:
        hook = _hook_for(provider, conn_id, per_hour, per_second)
        try:
            key = hook.limiter_key
        except Exception as exc:  # a missing connection: list it and say why it has no figures
            out.append(Credential(conn_id, provider, "", tuple(hook.rates), [integration_id] if integration_id else [],
                                  error=f"connection {conn_id!r} unavailable ({type(exc).__name__})"))  # fmt: skip
            continue
        credential = by_key.get(key)
        if credential is None:
            credential = by_key[key] = Credential(conn_id, provider, key, tuple(hook.rates))
            out.append(credential)
        if integration_id:
            credential.integrations.append(integration_id)
    return out


def _seconds(rate: RateSpec) -> float:
    return rate.to_rate().interval / 1000.0


def _bucket(conn: psycopg.Connection, key: str, rate: RateSpec) -> tuple[int, dt.datetime | None]:
    """(calls in the rate's window, the call that must leave it before one more fits)."""
    table = BUCKET_PREFIX + bucket_table(key)
    if not conn.execute(BUCKET_EXISTS, (table,)).fetchone()[0]:
        return 0, None
    query = sql.SQL(WINDOW_COUNT).format(table=sql.Identifier(table))
    count, blocking = conn.execute(query, {"window": _seconds(rate), "offset": max(rate.limit - 1, 0)}).fetchone()
    return int(count), blocking


def lock_holders(conn: psycopg.Connection, lock: int) -> dict[str, Any]:
    """Who holds an advisory lock (pid, application name, since when) and how many queue behind."""
    rows = conn.execute(ADVISORY_LOCK_HOLDERS, pg_locks_key(lock)).fetchall()
    holder = next(({"pid": pid, "application_name": (name or "").split(LANE_DONE_AT, 1)[0] or None,
                    "since": _iso(start or backend), "expects_done_at": _unix_iso(lane_done_at(name))}
                   for granted, pid, name, start, backend in rows if granted), None)  # fmt: skip
    return {"held": holder is not None, "holder": holder, "queued": sum(1 for row in rows if not row[0])}


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _unix_iso(value: float | None) -> str | None:
    return None if value is None else dt.datetime.fromtimestamp(value, dt.UTC).isoformat()


def credential_snapshot(conn: psycopg.Connection, credential: Credential) -> dict[str, Any]:
    """One credential's quota: calls per window against each limit, scheduled and background
    shares over the pace window, the locks, and when the next call fits."""
    out: dict[str, Any] = {
        "credential": credential.label,
        "provider": credential.provider,
        "integrations": credential.integrations,
        "error": credential.error,
    }
    if credential.error:
        return out
    now = conn.execute(DATABASE_NOW).fetchone()[0]
    windows, next_free = [], now
    for rate in credential.rates:
        calls, blocking = _bucket(conn, credential.key, rate)
        frees_at = blocking + dt.timedelta(seconds=_seconds(rate)) if blocking is not None and calls >= rate.limit else now
        next_free = max(next_free, frees_at)
        windows.append({
            "rate": str(rate), "limit": rate.limit, "window_s": round(_seconds(rate), 3), "calls": calls,
            "used_share": round(calls / rate.limit, 4) if rate.limit else None,
        })  # fmt: skip
    pace = background_pace(credential.rates)
    if pace:
        window = pace[0]
        background, _ = _bucket(conn, pace_key(credential.key), window)
        total, _ = _bucket(conn, credential.key, RateSpec(window.limit, window.per_seconds, exact=True))
        out["recent"] = {
            "window_s": round(_seconds(window), 3),
            "calls": total,
            "background": background,
            "scheduled": max(total - background, 0),
            "background_pace_limit": window.limit,
        }
    out.update(
        windows=windows,
        next_free_at=_iso(next_free),
        next_free_in_s=round(max((next_free - now).total_seconds(), 0.0), 1),
        waiting_room=lock_holders(conn, waiting_room_id(credential.key)),
        background_room=lock_holders(conn, waiting_room_id(credential.key, background=True)),
        lane=lock_holders(conn, lane_id(credential.key)),
    )
    return out


def quota_snapshot(conn: psycopg.Connection, credentials: Sequence[Credential] | None = None) -> list[dict[str, Any]]:
    """Per credential (default: every enabled integration's and The Racing API's), a plain dict:
    `windows` (calls against each limit), `recent` (scheduled and background calls over the pace
    window), `waiting_room` / `background_room` / `lane` (holder and queue), `next_free_in_s`."""
    if credentials is None:
        credentials = known_credentials(conn)
    return [credential_snapshot(conn, credential) for credential in credentials]
