"""RunSignUp registrations: the RunSignUp adapter of the registration engine.

What is RunSignUp's own (params, the choice of integrations, the full/incremental rule, the
writer lock, the batch loop and the run's verdict are :mod:`paceline.registrations.engine`'s):

``plan(params, now)`` lists each key's races and events (the race list for future events; race
details, read again only when a race's ``last_modified`` changes, for past ones), keeps a
malformed race or event in ``paceline.rejected_records``, upserts the rest into
``registrations.runsignup_events`` and returns the due events, one race per mapped item while
they fit.

``sync_batch(item, params)`` (one mapped task) syncs the item's events race by race
(``sync_race``): the events of a race share their calls (``event_id`` as a list) and each
commits alone, under its writer lock. A full sync reads every participant and every removed
registration and marks the registrations it no longer lists ``not_listed``; an incremental one
sends the cursor as ``modified_after_timestamp`` (inclusive). The participants, the removals,
the rejected records, the new cursor and the audit row commit in one transaction, so a killed
task leaves the event as it was.

The cursor is the highest ``last_modified`` seen, but never later than the sync's start minus a
margin: a record modified while the pages were being read, behind the keyset position, then
still has a stamp at or after the cursor and is read next time. Records at exactly the cursor are
read again and the upsert leaves them unchanged (no duplicates, no misses). A record that could
not be parsed holds the cursor at or before its stamp, so it is read again once it is fixed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from paceline import audit, watermarks
from paceline.db import warehouse
from paceline.http.session import ApiError, PermanentApiError, RetryPolicy, redact
from paceline.providers.runsignup.client import (
    FIXABLE_BY_FULL_SYNC,
    AmbiguousAnswer,
    RunSignUpClient,
    error_code,
)
from paceline.providers.runsignup.hook import RunSignUpHook
from paceline.providers.runsignup.models import (
    EVENT_KEY,
    EVENT_TABLE,
    PARTICIPANT_KEY,
    PARTICIPANT_TABLE,
    EventRef,
    ParseError,
    parse_event,
    parse_participant,
)
from paceline.registrations import engine
from paceline.registrations.engine import PlanFailure, SyncParams
from paceline.registrations.planning import MAX_MAPPED_ITEMS, Integration, mapped_batches

log = logging.getLogger(__name__)

PROVIDER = "runsignup"
REQUIRED_FIELDS = ("login", "password")
PLAN_WORKERS = 16  # integrations listed at once by the plan task (each thread mostly waits on its own quota)
CURSOR_MARGIN_S = 10  # RunSignUp's own advice: ask from ~10 s in the past against clock differences
CALLS_PER_RACE_AT_LEAST = 2  # participants and removed-participants: a task starts when both fit

SELECT_EVENT_SYNC_TIMES = """
SELECT scope, updated_at FROM paceline.watermarks WHERE integration_id = %s AND scope LIKE 'event:%%'
"""
SELECT_LISTED_IDS = """
SELECT registration_id FROM registrations.runsignup_participants
WHERE timing_partner_id = %s AND race_id = %s AND event_id = %s AND removed_reason IS NULL
"""
MARK_UNLISTED = """
UPDATE registrations.runsignup_participants SET removed_reason = 'not_listed', synced_at = now()
WHERE timing_partner_id = %s AND race_id = %s AND event_id = %s AND removed_reason IS NULL
  AND registration_id = ANY(%s)
"""
# A credential shared by several timing partners is synced once: its rows are copied to the others.
COPY_EVENT_TO_MIRROR = """
INSERT INTO registrations.runsignup_participants AS t
    (timing_partner_id, race_id, event_id, registration_id, first_name, last_name, email, dob, gender, bib_num,
     registration_date, last_modified, removed_reason, raw, synced_at)
SELECT %(mirror)s, race_id, event_id, registration_id, first_name, last_name, email, dob, gender, bib_num,
       registration_date, last_modified, removed_reason, raw, synced_at
FROM registrations.runsignup_participants
WHERE timing_partner_id = %(primary)s AND race_id = %(race_id)s AND event_id = %(event_id)s
ON CONFLICT (timing_partner_id, race_id, event_id, registration_id) DO UPDATE SET
    first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name, email = EXCLUDED.email, dob = EXCLUDED.dob,
    gender = EXCLUDED.gender, bib_num = EXCLUDED.bib_num, registration_date = EXCLUDED.registration_date,
    last_modified = EXCLUDED.last_modified, removed_reason = EXCLUDED.removed_reason, raw = EXCLUDED.raw,
    synced_at = EXCLUDED.synced_at
WHERE (t.last_modified, t.removed_reason, t.raw) IS DISTINCT FROM (EXCLUDED.last_modified, EXCLUDED.removed_reason, EXCLUDED.raw)
"""
COUNT_ACTIVE = """
SELECT count(*) FROM registrations.runsignup_participants
WHERE timing_partner_id = %s AND race_id = %s AND event_id = %s AND removed_reason IS NULL
"""


def event_scope(race_id: int, event_id: int) -> str:
    return f"event:{int(race_id)}:{int(event_id)}"


def make_client(integration: Integration, retry: RetryPolicy | None = None) -> RunSignUpClient:
    """A client whose calls take slots from the integration's quota (calls_per_hour, default 1,000)."""
    hook = RunSignUpHook(
        integration.conn_id,
        calls_per_hour=integration.calls_per_hour,
        calls_per_second=integration.calls_per_second,
        retry=retry,
    )
    return hook.get_client()


# ---------------------------------------------------------------------------------------------
# Planning


SELECT_RACE_DETAIL_MARKS = """
SELECT substr(scope, 6)::bigint, cursor_value FROM paceline.watermarks WHERE integration_id = %s AND scope LIKE 'race:%%'
"""
SELECT_STORED_EVENTS = """
SELECT timing_partner_id, race_id, event_id, integration_id, race_name, event_name, start_time, race_timezone,
       race_last_modified, raw
FROM registrations.runsignup_events WHERE integration_id = %s
"""
STORED_EVENT_COLUMNS = ("timing_partner_id", "race_id", "event_id", "integration_id", "race_name", "event_name",
                        "start_time", "race_timezone", "race_last_modified", "raw")


def race_scope(race_id: int) -> str:
    return f"race:{int(race_id)}"


def discover_events(
    client: RunSignUpClient,
    integration: Integration,
    *,
    future_only: bool,
    today: date,
    known_details: Mapping[int, str] | None = None,
    stored: Mapping[int, list[dict[str, Any]]] | None = None,
) -> tuple[list[dict[str, Any]], dict[int, str], list[tuple[Any, str]]]:
    """The integration's events as runsignup_events rows, the races whose detail was read, and
    the listing entries that could not be read (raw entry, reason): a malformed race or event is
    kept for inspection and skipped, never allowed to fail the other races or partners.

    The race list gives each race's "most current" events only (its upcoming ones, or else its
    last date), which is all a future-only plan needs: one call per 1,000 races. A plan with
    past events needs each race's detail, which lists every event; it is read again only when
    the race's ``last_modified`` differs from the one of the stored detail (`known_details`),
    else the stored past events are reused and the list's current events laid over them.
    """
    rows: list[dict[str, Any]] = []
    details: dict[int, str] = {}
    rejects: list[tuple[Any, str]] = []
    known_details, stored = known_details or {}, stored or {}

    def parse(race: Mapping[str, Any], events: Any) -> dict[int, dict[str, Any]]:
        out = {}
        if not isinstance(events, list):
            rejects.append((race, f"race {race.get('race_id')}: events is {type(events).__name__}, not a list"))
            return out
        for event in events:
            try:
                if not isinstance(event, dict):
                    raise ParseError(f"event is {type(event).__name__}, not an object")
                row = parse_event(dict(race), event, timing_partner_id=integration.timing_partner_id,
                                  integration_id=integration.integration_id)
            except (ParseError, TypeError, ValueError, KeyError) as exc:
                log.warning("race %s: an event cannot be read, kept in rejected_records: %s", race.get("race_id"), exc)
                rejects.append((event, f"race {race.get('race_id')}: event: {exc}"))
                continue
            out[row["event_id"]] = row
        return out

    for race in client.races(events=True):
        try:
            if not isinstance(race, dict):
                raise ParseError(f"race entry is {type(race).__name__}, not an object")
            race_id = int(race["race_id"])
        except (ParseError, TypeError, ValueError, KeyError) as exc:
            log.warning("a race of %s cannot be read, kept in rejected_records: %s", integration.integration_id, exc)
            rejects.append((race, f"race entry: {exc.__class__.__name__}: {exc}"))
            continue
        current = parse(race, race.get("events") or [])
        if future_only:
            by_event = current
        else:
            modified = str(race.get("last_modified"))
            if stored.get(race_id) and known_details.get(race_id) == modified:
                by_event = {r["event_id"]: dict(r) for r in stored[race_id]} | current
            else:
                by_event = parse(race, client.race(race_id).get("events") or [])
                details[race_id] = modified
        for row in by_event.values():
            if future_only and row["start_time"] is not None and row["start_time"].date() < today:
                continue
            rows.append(row)
    return rows, details, rejects


def _event_work(
    integration: Integration, row: Mapping[str, Any], reason: str, last: datetime | None,
    mirrors: Sequence[Integration] = (),
) -> dict[str, Any]:
    start = row.get("start_time")
    return {
        "integration": integration.to_dict(),
        **({"mirrors": [m.to_dict() for m in mirrors]} if mirrors else {}),
        "race_id": int(row["race_id"]),
        "event_id": int(row["event_id"]),
        "race_name": row.get("race_name"),
        "event_name": row.get("event_name"),
        "start_time": start.isoformat() if isinstance(start, datetime) else start,
        "reason": reason,
        "last_synced_at": last.isoformat() if last else None,
    }


def _label(events: list[dict[str, Any]]) -> str:
    """What the UI shows for a mapped item: partner, race and event(s)."""
    first = events[0]
    partners = sorted({e["integration"]["timing_partner_id"] for e in events})
    partner = "tp " + ",".join(map(str, partners))
    race = first.get("race_name") or first["race_id"]
    if len(events) == 1:
        return f"{partner}: {race} / {first.get('event_name') or ''} ({first['event_id']})"
    if len({e["race_id"] for e in events}) == 1:
        names = ", ".join(str(e.get("event_name") or e["event_id"]) for e in events)
        return f"{partner}: {race} / {names}"[:250]
    return f"{partner}: {len(events)} events from {race} / {first.get('event_name') or ''} ({first['event_id']})"


def _by_race(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Events grouped by race (a race's events share their calls), in the order of their first event."""
    races: dict[int, list[dict[str, Any]]] = {}
    for event in events:
        races.setdefault(event["race_id"], []).append(event)
    return list(races.values())


def group_work(per_integration: list[list[dict[str, Any]]], max_items: int = MAX_MAPPED_ITEMS) -> list[dict[str, Any]]:
    """Mapped items (planning.mapped_batches over races): one race's due events each while they
    fit, else batches of races of one integration; a race's events stay in one item, so that they
    share their calls."""
    return [{"label": _label(events), "events": events}
            for events in ([e for race in races for e in race]
                           for races in mapped_batches([_by_race(events) for events in per_integration], max_items))]


def _plan_integration(
    integration: Integration, p: SyncParams, now: datetime, today: date, retry: RetryPolicy | None,
    mirrors: Sequence[Integration] = (),
) -> list[dict[str, Any]]:
    """List one integration's events, upsert them (for the partners sharing its credential too),
    and return its due events (nearest first)."""
    known: dict[int, str] = {}
    stored: dict[int, list[dict[str, Any]]] = {}
    if not p.future_only:
        with warehouse.connect() as conn:
            known = dict(conn.execute(SELECT_RACE_DETAIL_MARKS, (integration.integration_id,)).fetchall())
            for values in conn.execute(SELECT_STORED_EVENTS, (integration.integration_id,)):
                row = dict(zip(STORED_EVENT_COLUMNS, values, strict=True))
                stored.setdefault(row["race_id"], []).append(row)
    client = make_client(integration, retry)
    try:
        rows, details, rejects = discover_events(client, integration, future_only=p.future_only, today=today,
                                                 known_details=known, stored=stored)
    except ApiError as exc:
        # One partner's revoked key must not stop the others; the summary names it.
        engine.record_plan_failure(
            PROVIDER, PlanFailure(integration.integration_id, integration.timing_partner_id,
                                  f"listing races failed: {redact(str(exc))}"),
            calls=client.calls,
        )
        raise
    finally:
        client.close()
    listed_at = datetime.now(UTC)  # `now` may be a planning time; synced_at is when the row was read
    for row in rows:
        row["synced_at"] = listed_at
    with warehouse.unit_of_work() as conn:
        result = warehouse.upsert(conn, EVENT_TABLE, rows, key=EVENT_KEY)
        for mirror in mirrors:
            warehouse.upsert(conn, EVENT_TABLE, [{**row, "timing_partner_id": mirror.timing_partner_id,
                                                  "integration_id": mirror.integration_id} for row in rows], key=EVENT_KEY)
        for raw, reason in rejects:
            audit.reject(conn, provider=PROVIDER, reason=reason, raw=raw, integration_id=integration.integration_id,
                         unit="races")
        for race_id, modified in details.items():  # with the events they listed
            watermarks.advance(conn, integration.integration_id, race_scope(race_id), modified)
        # unit "plan": this attempt's listing succeeded (a retried plan replaces an earlier failure)
        audit.AuditRecord(PROVIDER, engine.PLAN_UNIT, "races", integration_id=integration.integration_id,
                          timing_partner_id=integration.timing_partner_id, rows_inserted=result.inserted,
                          rows_updated=result.updated, rows_rejected=len(rejects), calls=client.calls,
                          actual_size=len(rows), started_at=listed_at).write(conn)
        synced = {scope: at for scope, at in conn.execute(SELECT_EVENT_SYNC_TIMES, (integration.integration_id,))}
    log.info(
        "integration %s (timing partner %s): %d events (%d new, %d changed), %d calls",
        integration.integration_id, integration.timing_partner_id, len(rows), result.inserted, result.updated,
        client.calls,
    )
    work = []
    for row in rows:
        last = synced.get(event_scope(row["race_id"], row["event_id"]))
        if p.force_full_sync:
            reason = "force_full_sync"
        elif not p.due_only:
            reason = "all"
        elif last is None:
            reason = "new"
        else:
            start = row["start_time"]
            if not engine.is_due_event(start.date() if start is not None else None, last, now, p.proximity_tiers):
                continue
            reason = "due"
        work.append(_event_work(integration, row, reason, last, mirrors))
    # nearest first; an event without a date last
    work.sort(key=lambda w: abs(_day(w["start_time"]) - today) if w["start_time"] else timedelta.max)
    return work


def plan(
    params: Mapping[str, Any] | None,
    now: datetime | None = None,
    *,
    retry: RetryPolicy | None = None,
    max_items: int = MAX_MAPPED_ITEMS,
    workers: int = PLAN_WORKERS,
) -> list[dict[str, Any]]:
    """Work items for one run; raises ParamError on a bad param, ConfigError when no selected
    integration is usable.

    Integrations are listed concurrently (each on its own key's quota). One that is misconfigured
    or whose listing fails is audited as a plan failure (the run's summary then fails the run,
    naming it) and the others are planned; if every listing fails the plan fails.
    """
    p = SyncParams.from_params(params)
    now = now or datetime.now(UTC)
    today = now.astimezone(UTC).date()
    groups = engine.credential_groups(
        engine.select_run_integrations(PROVIDER, RunSignUpHook, REQUIRED_FIELDS, p.timing_partner_id), RunSignUpHook)
    integrations = [group[0] for group in groups]  # a shared credential is listed and synced once

    per_integration: list[list[dict[str, Any]]] = []
    failures: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(integrations)))) as pool:
        futures = [pool.submit(_plan_integration, group[0], p, now, today, retry, group[1:]) for group in groups]
        for integration, future in zip(integrations, futures, strict=True):
            try:
                per_integration.append(future.result())
            except ApiError as exc:
                message = redact(str(exc))
                log.error("integration %s: listing events failed: %s", integration.integration_id, message)
                failures.append(f"{integration.integration_id}: {message}")
    if failures and len(failures) == len(integrations):
        raise RuntimeError("listing events failed for every integration: " + "; ".join(failures))
    items = group_work(per_integration, max_items)
    log.info("planned %d events in %d mapped items", sum(len(i["events"]) for i in items), len(items))
    return items


def _day(value: str | None) -> date | None:
    return datetime.fromisoformat(value).date() if value else None


# ---------------------------------------------------------------------------------------------
# Syncing one event


@dataclass
class Cursor:
    """Per-event cursors: None means read everything (no modified_after_timestamp)."""

    participants: int | None = None
    removed: int | None = None

    @classmethod
    def decode(cls, value: str | None) -> Cursor:
        if not value:
            return cls()
        data = json.loads(value)
        return cls(data.get("participants"), data.get("removed"))

    def encode(self) -> str:
        return json.dumps({"participants": self.participants, "removed": self.removed}, sort_keys=True)


@dataclass
class Fetched:
    participants: list[Any] = field(default_factory=list)
    removed: list[Any] = field(default_factory=list)


def _decide(p: SyncParams, wm: watermarks.Watermark | None, now: datetime) -> tuple[str, str]:
    decision = engine.decide(wm is not None, wm.last_full_sync_at if wm else None, p, now)
    return decision.sync_type, decision.reason


def _lowest(values: Iterable[int | None]) -> int | None:
    """The cursor that covers every event of a shared call: the lowest, or None (all) if any is None."""
    values = list(values)
    return None if not values or any(v is None for v in values) else min(v for v in values if v is not None)


def _fetch_race(
    client: RunSignUpClient, race_id: int, event_ids: list[int], cursors: list[Cursor] | None
) -> dict[int, Fetched]:
    """Participants and removals of several events of one race, one call per page for all of them.

    cursors None: everything (full syncs). Otherwise the lowest cursor of the events is sent,
    so an event with a later cursor gets some records again, which its upsert leaves unchanged.
    """
    since_p = _lowest(c.participants for c in cursors) if cursors is not None else None
    since_r = _lowest(c.removed for c in cursors) if cursors is not None else None
    try:
        active = client.participants_of_events(race_id, event_ids, modified_after=since_p)
        removed = client.participants_of_events(race_id, event_ids, modified_after=since_r, removed=True)
    except AmbiguousAnswer:
        if len(event_ids) == 1:
            raise
        log.warning("race %s: a shared call's answer does not name its events; asking event by event", race_id)
        one_by_one = [_fetch_race(client, race_id, [e], None if cursors is None else [c])
                      for e, c in zip(event_ids, cursors or [None] * len(event_ids), strict=True)]
        return {event_id: fetched[event_id] for fetched in one_by_one for event_id in fetched}
    return {event_id: Fetched(active[event_id], removed[event_id]) for event_id in event_ids}


def _raw_stamp(raw: Any, name: str) -> int | None:
    if isinstance(raw, dict):
        value = raw.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _new_cursor(
    old: int | None, full: bool, stamps: list[int], rejected_stamps: list[int | None], start_ts: float
) -> int | None:
    ceiling = int(start_ts) - CURSOR_MARGIN_S
    if stamps:
        value: int | None = min(max(stamps), ceiling)
        if old is not None and old <= ceiling:  # never step back (a cursor in the future is not kept)
            value = max(value, old)
    else:
        value = ceiling if full else old
    if rejected_stamps:
        if any(s is None for s in rejected_stamps):
            return None if full else old  # its stamp is unknown: read from where we were
        lowest = min(s for s in rejected_stamps if s is not None)
        value = lowest if value is None else min(value, lowest)
    return value


def sync_race(
    events: list[Mapping[str, Any]],
    params: Mapping[str, Any] | None = None,
    *,
    now: datetime | None = None,
    retry: RetryPolicy | None = None,
    client: RunSignUpClient | None = None,
) -> list[dict[str, Any] | Exception]:
    """Sync planned events of one race and one integration; one outcome per event, in order.

    The events share their calls (``event_id`` as a list: two calls per page round for all of
    them, not per event) and each commits in its own transaction. An outcome is the event's
    summary, or the exception that failed it (after a failed audit row); a failed fetch fails
    every event of the race, a failed write only its event.
    """
    p = SyncParams.from_params(params)
    integration = Integration.from_dict(dict(events[0]["integration"]))
    race_id = int(events[0]["race_id"])
    if any(int(e["race_id"]) != race_id or e["integration"]["integration_id"] != integration.integration_id
           for e in events):
        raise ValueError("sync_race takes events of one race and one integration")
    event_ids = list(dict.fromkeys(int(e["event_id"]) for e in events))
    names = {int(e["event_id"]): e.get("event_name") or "" for e in events}
    own_client = client is None
    client = client or make_client(integration, retry)
    started = datetime.now(UTC)
    start_ts = time.time()
    now = now or started
    types = dict.fromkeys(event_ids, "full")
    outcomes: dict[int, dict[str, Any] | Exception] = {}
    writer = engine.event_writer(PROVIDER, integration.timing_partner_id, *[f"{race_id}/{e}" for e in event_ids])
    try:
        with writer:
            _sync_race_locked(p, integration, race_id, event_ids, names, client, now, started, start_ts, types, outcomes,
                              engine.mirrors_of(events[0]))
    finally:
        if own_client:
            client.close()
    return [outcomes[int(e["event_id"])] for e in events]


def _sync_race_locked(
    p: SyncParams, integration: Integration, race_id: int, event_ids: list[int], names: Mapping[int, str],
    client: RunSignUpClient, now: datetime, started: datetime, start_ts: float, types: dict[int, str],
    outcomes: dict[int, dict[str, Any] | Exception], mirrors: Sequence[Integration] = (),
) -> None:
    """sync_race's work, under the events' writer lock: read the cursors, fetch, write each event."""
    calls_before = client.calls
    try:
        with warehouse.connect() as conn:
            marks = {e: watermarks.get(conn, integration.integration_id, event_scope(race_id, e)) for e in event_ids}
        cursors = {e: Cursor.decode(marks[e].cursor_value if marks[e] else None) for e in event_ids}
        for event_id in event_ids:
            types[event_id], why = _decide(p, marks[event_id], now)
            log.info("event %s/%s (timing partner %s, %s): %s sync: %s", race_id, event_id,
                     integration.timing_partner_id, names[event_id], types[event_id], why)
        fetched: dict[int, Fetched] = {}
        incremental = [e for e in event_ids if types[e] == "incremental"]
        if incremental:
            try:
                fetched.update(_fetch_race(client, race_id, incremental, [cursors[e] for e in incremental]))
            except PermanentApiError as exc:
                if error_code(exc) not in FIXABLE_BY_FULL_SYNC:
                    raise
                log.warning("race %s: incremental call failed (%s); falling back to full syncs", race_id,
                            redact(str(exc)))
                types.update(dict.fromkeys(incremental, "full"))
        full = [e for e in event_ids if types[e] == "full"]
        if full:
            fetched.update(_fetch_race(client, race_id, full, None))
    except Exception as exc:
        calls = _split(client.calls - calls_before, len(event_ids))
        for event_id, spent in zip(event_ids, calls, strict=True):
            outcomes[event_id] = _failed(integration, race_id, event_id, types[event_id], exc, spent, started)
        return
    calls = _split(client.calls - calls_before, len(event_ids))
    for event_id, spent in zip(event_ids, calls, strict=True):
        ref = EventRef(integration.timing_partner_id, race_id, event_id)
        try:
            summary = _write(integration, ref, f"{race_id}/{event_id}", event_scope(race_id, event_id),
                             types[event_id], cursors[event_id], fetched[event_id], started, start_ts, spent, mirrors)
        except Exception as exc:
            outcomes[event_id] = _failed(integration, race_id, event_id, types[event_id], exc, spent, started)
            continue
        outcomes[event_id] = summary
        log.info(
            "event %s/%s: %s sync done: %d inserted, %d updated, %d removed, %d rejected, %d calls, %.1fs",
            race_id, event_id, summary["sync_type"], summary["inserted"], summary["updated"], summary["removed"],
            summary["rejected"], summary["calls"], summary["duration_s"],
        )


def _split(total: int, parts: int) -> list[int]:
    """Calls shared by the events of a race, attributed evenly (the remainder to the first ones)."""
    share, extra = divmod(total, parts)
    return [share + (1 if i < extra else 0) for i in range(parts)]


def _failed(
    integration: Integration, race_id: int, event_id: int, sync_type: str, exc: Exception, calls: int,
    started: datetime,
) -> Exception:
    message = redact(f"{exc.__class__.__name__}: {exc}")
    log.error("event %s/%s: %s sync failed: %s", race_id, event_id, sync_type, message)
    try:
        with warehouse.unit_of_work() as conn:
            audit.AuditRecord(PROVIDER, f"{race_id}/{event_id}", sync_type, integration_id=integration.integration_id,
                              timing_partner_id=integration.timing_partner_id, status="failed", calls=calls,
                              error=message[:2000], started_at=started).write(conn)
    except Exception:  # the warehouse may be what failed; the task's own failure says enough
        log.exception("event %s/%s: could not write the failed audit row", race_id, event_id)
    return exc


def sync_event(
    event: Mapping[str, Any],
    params: Mapping[str, Any] | None = None,
    *,
    now: datetime | None = None,
    retry: RetryPolicy | None = None,
    client: RunSignUpClient | None = None,
) -> dict[str, Any]:
    """Sync one planned event; returns its summary, or raises (after a failed audit row)."""
    outcome = sync_race([event], params, now=now, retry=retry, client=client)[0]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def _write(
    integration: Integration,
    ref: EventRef,
    unit: str,
    scope: str,
    sync_type: str,
    old: Cursor,
    fetched: Fetched,
    started: datetime,
    start_ts: float,
    calls: int,
    mirrors: Sequence[Integration] = (),
) -> dict[str, Any]:
    full = sync_type == "full"
    active_rows, removed_rows = [], []
    rejects: list[tuple[Any, ParseError, bool]] = []
    for raw in fetched.participants:
        try:
            active_rows.append({**parse_participant(raw, ref), "synced_at": started})
        except ParseError as exc:
            rejects.append((raw, exc, False))
    for raw in fetched.removed:
        try:
            removed_rows.append({**parse_participant(raw, ref, removed=True), "synced_at": started})
        except ParseError as exc:
            rejects.append((raw, exc, True))
    cursor = Cursor(
        _new_cursor(old.participants, full, [r["last_modified"] for r in active_rows],
                    [_raw_stamp(raw, "last_modified") for raw, _, rem in rejects if not rem], start_ts),
        _new_cursor(old.removed, full, [r["last_modified"] for r in removed_rows if r["last_modified"] is not None],
                    [_raw_stamp(raw, "last_modified_ts") for raw, _, rem in rejects if rem], start_ts),
    )
    with warehouse.unit_of_work() as conn:
        # a live record never undoes a newer one (a removal is always applied)
        active = warehouse.upsert(conn, PARTICIPANT_TABLE, active_rows, key=PARTICIPANT_KEY, not_older_by="last_modified")
        removed = warehouse.upsert(conn, PARTICIPANT_TABLE, removed_rows, key=PARTICIPANT_KEY)
        unlisted = 0
        if full and not any(exc.record_key is None for _, exc, _ in rejects):
            unlisted = _mark_unlisted(conn, ref, active_rows, removed_rows, rejects)
        for raw, exc, _removed in rejects:
            audit.reject(conn, provider=PROVIDER, reason=str(exc), raw=raw, integration_id=integration.integration_id,
                         unit=unit, record_key=exc.record_key)
        watermarks.advance(conn, integration.integration_id, scope, cursor.encode(),
                           full_sync_at=started if full else None)
        actual = conn.execute(COUNT_ACTIVE, (ref.timing_partner_id, ref.race_id, ref.event_id)).fetchone()[0]
        record = audit.AuditRecord(
            PROVIDER, unit, sync_type, integration_id=integration.integration_id,
            timing_partner_id=ref.timing_partner_id, rows_inserted=active.inserted, rows_updated=active.updated,
            rows_removed=removed.inserted + removed.updated + unlisted, rows_rejected=len(rejects), calls=calls,
            actual_size=actual, started_at=started,
        )
        record.write(conn)
        for mirror in mirrors:  # the partners sharing this credential: the same rows, cursor and a "mirror" audit row
            conn.execute(COPY_EVENT_TO_MIRROR, {"mirror": mirror.timing_partner_id, "primary": ref.timing_partner_id,
                                                "race_id": ref.race_id, "event_id": ref.event_id})
            watermarks.advance(conn, mirror.integration_id, scope, cursor.encode(), full_sync_at=started if full else None)
            audit.AuditRecord(PROVIDER, unit, "mirror", integration_id=mirror.integration_id,
                              timing_partner_id=mirror.timing_partner_id, actual_size=actual, started_at=started).write(conn)
    if rejects:
        log.warning("event %s: %d record(s) rejected (see paceline.rejected_records), e.g. %s",
                    unit, len(rejects), rejects[0][1])
    return {
        "integration_id": integration.integration_id,
        "timing_partner_id": ref.timing_partner_id,
        "race_id": ref.race_id,
        "event_id": ref.event_id,
        "sync_type": sync_type,
        "status": "success",
        "inserted": record.rows_inserted,
        "updated": record.rows_updated,
        "removed": record.rows_removed,
        "rejected": record.rows_rejected,
        "unchanged": active.unchanged + removed.unchanged,
        "calls": calls,
        "participants": actual,
        "duration_s": round(time.time() - start_ts, 3),
    }


def _mark_unlisted(
    conn: Any, ref: EventRef, active_rows: list[dict[str, Any]], removed_rows: list[dict[str, Any]],
    rejects: Iterable[tuple[Any, ParseError, bool]],
) -> int:
    """A full read lists every registration; stored ones it no longer lists are flagged, not kept as live."""
    seen = {r["registration_id"] for r in active_rows} | {r["registration_id"] for r in removed_rows}
    seen |= {int(exc.record_key) for _, exc, _ in rejects if exc.record_key and exc.record_key.isdigit()}
    stored = [row[0] for row in conn.execute(SELECT_LISTED_IDS, (ref.timing_partner_id, ref.race_id, ref.event_id))]
    gone = [rid for rid in stored if rid not in seen]
    if gone:
        conn.execute(MARK_UNLISTED, (ref.timing_partner_id, ref.race_id, ref.event_id, gone))
    return len(gone)


# ---------------------------------------------------------------------------------------------
# Mapped batches and the run summary


def sync_batch(
    item: Mapping[str, Any], params: Mapping[str, Any] | None = None, *, retry: RetryPolicy | None = None
) -> dict[str, Any]:
    """Sync every event of a mapped item, race by race; a failing event does not stop the others.

    When the credential's quota stays spent for a while before the first event, raises QuotaSpent:
    Airflow reschedules the task for when a call fits, and its slot serves other credentials.

    Raises at the end when any event failed (engine.EventsFailed, naming them), so that the
    mapped task shows failed (and its retry, or a clear, syncs its events again from their
    committed cursors).
    """
    races: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for event in item["events"]:
        races.setdefault((event["integration"]["integration_id"], int(event["race_id"])), []).append(event)
    clients: dict[str, RunSignUpClient] = {}
    started: list[bool] = []

    def sync_one(events: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        integration_id = events[0]["integration"]["integration_id"]
        client = clients.get(integration_id)
        if client is None:
            integration = Integration.from_dict(dict(events[0]["integration"]))
            client = clients[integration_id] = make_client(integration, retry)
        if not started:  # nothing done yet: give the slot back rather than wait long
            client.session.reschedule_if_quota_spent(calls=CALLS_PER_RACE_AT_LEAST)
        started.append(True)
        outcomes = sync_race(events, params, client=client)
        failed = [(e, o) for e, o in zip(events, outcomes, strict=True) if isinstance(o, Exception)]
        if failed:
            raise engine.EventsFailed("; ".join(
                f"{e['race_id']}/{e['event_id']}: {o.__class__.__name__}: {o}" for e, o in failed))
        return [o for o in outcomes if not isinstance(o, Exception)]

    def name_of(events: list[Mapping[str, Any]]) -> str:
        first = events[0]
        return f"{first['integration']['integration_id']} race {first['race_id']}"

    try:
        done = engine.run_batch(list(races.values()), sync_one, name_of)
    finally:
        for client in clients.values():
            client.close()
    return {"label": item.get("label"), "events": [e for race in done for e in race]}


def summarize_run(
    run_id: str, dag_id: str = "runsignup_sync", task_states: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The run's outcome (engine.summarize_run); raises engine.RunFailed when anything failed."""
    return engine.summarize_run(PROVIDER, dag_id, run_id, task_states)
