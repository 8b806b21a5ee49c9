"""Haku registrations: plan the due events, then sync each event in one transaction.

How an event is synced (docs/providers.md, Haku):

* participant summaries are listed newest change first (``sort_column=updated_at``,
  ``sort_direction=desc``) page after page until an EMPTY page, because the server caps
  ``per_page`` silently; an incremental sync stops at the first summary older than the
  event's cursor (inclusive at the cursor: equal stamps are re-read, the upsert dedupes them);
* a registration's detail is fetched only when the summary is new or its ``updated_at``
  differs from the stored one, so an unchanged event costs its listing pages and nothing more;
* the participants, the new cursor (the newest ``updated_at`` the listing showed) and the
  audit row commit in one transaction: a killed task leaves the event as it was before or after;
* a record that cannot be parsed goes to ``paceline.rejected_records`` and the rest commits; the
  cursor is held at or below the rejected record, so that the next run reads it again.

Full sync (the whole listing) for a new event, when the last full sync is older than
``incremental_days``, on ``force_full_sync`` (which also re-reads every detail), and as a
fallback when an incremental listing fails in a way a full one can fix.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from paceline import audit, watermarks
from paceline.db.warehouse import connect, dsn_from_airflow, upsert
from paceline.http.limiter import QuotaSpent, lane_recheck_s
from paceline.http.session import (
    ApiError,
    PermanentApiError,
    RetryPolicy,
    ThrottleStormError,
    TransientApiError,
)
from paceline.providers.haku.client import DEFAULT_PER_PAGE, HakuClient
from paceline.providers.haku.hook import HakuHook
from paceline.providers.haku.models import (
    HakuEvent,
    ParseError,
    ParticipantSummary,
    format_ts,
    parse_datetime,
    parse_event,
    parse_registration,
    parse_summary,
    registration_number_of,
)
from paceline.registrations.planning import (
    MAX_MAPPED_ITEMS,
    Integration,
    batch,
    is_due,
    select_integrations,
    tiers_from_param,
    validate_connection,
)

log = logging.getLogger(__name__)

PROVIDER = "haku"
PARTICIPANTS_TABLE = "registrations.haku_participants"
PARTICIPANT_KEY = ["event_id", "participant_id", "timing_partner_id"]
EVENTS_TABLE = "registrations.haku_events"
EVENT_KEY = ["timing_partner_id", "event_id"]
REQUIRED_FIELDS = ("login", "password")
EPOCH_CURSOR = "1970-01-01T00:00:00Z"  # "read everything" (an empty event, or a held cursor)

SELECT_STORED = """
SELECT participant_id, updated_at, is_cancelled FROM registrations.haku_participants
WHERE event_id = %s AND timing_partner_id = %s
"""
SELECT_EVENT_WATERMARKS = """
SELECT scope, updated_at FROM paceline.watermarks WHERE integration_id = %s AND scope LIKE 'event:%%'
"""
LOCK_EVENT = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"


def scope_of(event_id: str) -> str:
    return f"event:{event_id}"


@dataclass(frozen=True)
class SyncParams:
    """The DAG params (docs/contract.md), with their defaults."""

    force_full_sync: bool = False
    incremental_days: int = 7
    timing_partner_id: int | None = None
    future_only: bool = True
    due_only: bool = True
    per_page: int = DEFAULT_PER_PAGE
    proximity_tiers: Any = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> SyncParams:
        params = dict(params or {})
        tp = params.get("timing_partner_id")
        return cls(
            force_full_sync=bool(params.get("force_full_sync", False)),
            incremental_days=int(params.get("incremental_days", 7) if params.get("incremental_days") is not None else 7),
            timing_partner_id=None if tp in (None, "") else int(tp),
            future_only=bool(params.get("future_only", True)),
            due_only=bool(params.get("due_only", True)),
            per_page=int(params.get("per_page") or DEFAULT_PER_PAGE),
            proximity_tiers=params.get("proximity_tiers"),
        )


def retry_policy() -> RetryPolicy | None:
    """PACELINE_RETRY_BASE_S shrinks the backoff (tests, benchmarks); None keeps the session default."""
    base = os.environ.get("PACELINE_RETRY_BASE_S")
    if not base:
        return None
    b = float(base)
    return RetryPolicy(base_s=b, max_s=max(b * 16, b), throttle_wait_s=b, throttle_max_wait_s=max(60.0, b * 600))


def hook_for(integration: Integration, *, background: bool = False) -> HakuHook:
    return HakuHook(
        integration.conn_id,
        calls_per_hour=integration.calls_per_hour,
        calls_per_second=integration.calls_per_second,
        retry=retry_policy(),
        background=background,
    )


def warehouse_dsn() -> str:
    return dsn_from_airflow()


def label(item: Mapping[str, Any]) -> str:
    """What the UI shows for a mapped task: partner and event."""
    integ = item["integration"]
    name = item.get("event_name") or item["event_id"]
    return f"tp{integ['timing_partner_id']} {integ.get('organization') or integ['integration_id']}: {name} ({item.get('event_date') or '?'})"


def batch_label(items: list[Mapping[str, Any]]) -> str:
    if not items:
        return "(empty)"
    return label(items[0]) + (f" +{len(items) - 1} more" if len(items) > 1 else "")


# ---------------------------------------------------------------------------------------------
# Planning


def interleave(groups: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Round-robin over integrations, so concurrent tasks spend different credentials' quotas."""
    queues = [list(g) for g in groups if g]
    out: list[dict[str, Any]] = []
    while queues:
        for queue in list(queues):
            out.append(queue.pop(0))
            if not queue:
                queues.remove(queue)
    return out


def list_events(hook: HakuHook, per_page: int = DEFAULT_PER_PAGE) -> tuple[list[HakuEvent], list[tuple[Any, str]], int]:
    """Every event of the credential (past ones included); rejects; calls spent."""
    session = hook.get_conn()
    try:
        client = HakuClient(session, per_page)
        events, rejects, seen = [], [], set()
        for raw in client.iter_events(show_inactive=True):
            try:
                event = parse_event(raw)
            except ParseError as exc:
                rejects.append((raw, str(exc)))
                continue
            if event.event_id not in seen:
                seen.add(event.event_id)
                events.append(event)
        return events, rejects, session.stats.calls
    finally:
        session.close()


def event_row(integration: Integration, event: HakuEvent) -> dict[str, Any]:
    return {
        "timing_partner_id": integration.timing_partner_id,
        "event_id": event.event_id,
        "integration_id": integration.integration_id,
        "name": event.name,
        "event_date": event.event_date,
        "raw": event.raw,
        "synced_at": datetime.now(UTC),
    }


def work_item(integration: Integration, event: HakuEvent, **extra: Any) -> dict[str, Any]:
    return {
        "integration": integration.to_dict(),
        "event_id": event.event_id,
        "event_name": event.name,
        "event_date": event.event_date.isoformat() if event.event_date else None,
        **extra,
    }


def discover(
    conn: psycopg.Connection, integrations: list[Integration], per_page: int
) -> dict[str, tuple[Integration, list[HakuEvent]]]:
    """List every integration's events and upsert them (one transaction per integration).

    An integration whose listing fails is logged and audited, and the others go on: one partner's
    expired credential must not stop every partner's sync.
    """
    found: dict[str, tuple[Integration, list[HakuEvent]]] = {}
    failures = []
    for integration in integrations:
        started = datetime.now(UTC)
        try:
            events, rejects, calls = list_events(hook_for(integration), per_page)
        except Exception as exc:
            log.error("listing events of %s failed: %s", integration.integration_id, exc)
            failures.append(f"{integration.integration_id}: {exc}")
            with conn.transaction():
                audit.AuditRecord(
                    PROVIDER, "events", "events", integration.integration_id, integration.timing_partner_id,
                    status="failed", error=str(exc)[:2000], started_at=started,
                ).write(conn)
            continue
        with conn.transaction():
            result = upsert(conn, EVENTS_TABLE, [event_row(integration, e) for e in events], EVENT_KEY)
            for raw, reason in rejects:
                audit.reject(conn, provider=PROVIDER, reason=reason, raw=raw, integration_id=integration.integration_id, unit="events")
            audit.AuditRecord(
                PROVIDER, "events", "events", integration.integration_id, integration.timing_partner_id,
                rows_inserted=result.inserted, rows_updated=result.updated, rows_rejected=len(rejects),
                calls=calls, actual_size=len(events), started_at=started,
            ).write(conn)
        log.info("%s: %d events (%d new, %d changed)", integration.integration_id, len(events), result.inserted, result.updated)
        found[integration.integration_id] = (integration, events)
    if failures and not found:
        raise RuntimeError("listing events failed for every integration: " + "; ".join(failures))
    return found


def select_and_validate(conn: psycopg.Connection, provider_param: Mapping[str, Any], integration_id: str | None = None) -> list[Integration]:
    """Integrations of the run, every connection checked before anything is written."""
    integrations = select_integrations(conn, PROVIDER, provider_param.get("timing_partner_id"))
    if integration_id is not None:
        chosen = [i for i in integrations if i.integration_id == integration_id]
        if not chosen:
            valid = ", ".join(i.integration_id for i in integrations) or "(none enabled)"
            raise ValueError(f"integration_id {integration_id!r} names no enabled haku integration; valid: {valid}")
        integrations = chosen
    if not integrations:
        raise ValueError("no enabled haku integration in registrations.provider_integrations")
    for integration in integrations:
        validate_connection(HakuHook, integration.conn_id, REQUIRED_FIELDS)
    return integrations


def plan(params: Mapping[str, Any] | None, now: datetime | None = None, dsn: str | None = None) -> list[list[dict[str, Any]]]:
    """The run's work: batches of events (one per mapped task while there are few enough)."""
    p = SyncParams.from_params(params)
    now = now or datetime.now(UTC)
    tiers = tiers_from_param(p.proximity_tiers)
    with connect(dsn or warehouse_dsn(), autocommit=True) as conn:
        integrations = select_and_validate(conn, {"timing_partner_id": p.timing_partner_id})
        found = discover(conn, integrations, p.per_page)
        groups = []
        for integration, events in found.values():
            last_synced = {
                scope.removeprefix("event:"): at
                for scope, at in conn.execute(SELECT_EVENT_WATERMARKS, (integration.integration_id,)).fetchall()
            }
            chosen = []
            for event in events:
                if p.future_only and event.event_date is not None and event.event_date < now.date():
                    continue
                if p.due_only and not p.force_full_sync and event.event_date is not None:
                    if not is_due(event.event_date, last_synced.get(event.event_id), now, tiers):
                        continue
                chosen.append(event)
            chosen.sort(key=lambda e: abs((e.event_date - now.date()).days) if e.event_date else 10**6)
            groups.append([work_item(integration, e) for e in chosen])
    items = interleave(groups)
    log.info("planned %d Haku events over %d integrations", len(items), len(found))
    return batch(items, MAX_MAPPED_ITEMS)


# ---------------------------------------------------------------------------------------------
# One event


@dataclass
class Listing:
    """What one pass over an event's participants found."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[tuple[str | None, str, Any]] = field(default_factory=list)  # (key, reason, raw)
    listed: int = 0  # distinct registrations in the listing
    newest: datetime | None = None  # newest summary updated_at seen
    hold: datetime | None = None  # the cursor may not pass this (a rejected record lies here)
    details: int = 0
    missing: int = 0  # listed, then gone (404) when its detail was asked for


def _min(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b < a else a


def collect(
    client: HakuClient,
    event_id: str,
    timing_partner_id: int,
    stored: dict[str, tuple[datetime | None, bool]],
    cursor: datetime | None,
    refetch_all: bool = False,
) -> Listing:
    out = Listing()
    needed: list[ParticipantSummary] = []
    seen: set[str] = set()
    hold_next = False  # a summary without a readable stamp: hold at the next stamp below it
    stop = False
    for page in client.participant_pages(event_id):
        for raw in page:
            try:
                summary = parse_summary(raw)
            except ParseError as exc:
                number = registration_number_of(raw)
                if number is None:
                    out.rejects.append((None, f"participant summary: {exc}", raw))
                    hold_next = True
                    continue
                summary = ParticipantSummary(number, None, False)  # the detail will tell
            if summary.updated_at is not None:
                if hold_next:
                    out.hold, hold_next = _min(out.hold, summary.updated_at), False
                if cursor is not None and summary.updated_at < cursor:
                    stop = True  # sorted newest first: everything after this is older still
                    break
                out.newest = summary.updated_at if out.newest is None else max(out.newest, summary.updated_at)
            if summary.registration_number in seen:
                continue  # a change during paging shifted it onto the next page
            seen.add(summary.registration_number)
            before = stored.get(summary.registration_number)
            if refetch_all or before is None or summary.updated_at is None or before[0] != summary.updated_at:
                needed.append(summary)
        if stop:
            break
    if hold_next:  # nothing below the unreadable summary: make the next run read everything
        out.hold = _min(out.hold, datetime(1970, 1, 1, tzinfo=UTC))
    out.listed = len(seen)
    for summary in needed:
        try:
            raw = client.registration(event_id, summary.registration_number)
        except PermanentApiError as exc:
            if exc.status != 404:
                raise
            log.warning("registration %s of event %s vanished after listing", summary.registration_number, event_id)
            out.missing += 1
            continue
        out.details += 1
        try:
            registration = parse_registration(raw)
        except ParseError as exc:
            out.rejects.append((summary.registration_number, f"registration detail: {exc}", raw))
            out.hold = _min(out.hold, summary.updated_at or datetime(1970, 1, 1, tzinfo=UTC))
            continue
        if registration.registration_number != summary.registration_number:
            out.rejects.append((summary.registration_number, "registration detail answers for another registration", raw))
            out.hold = _min(out.hold, summary.updated_at or datetime(1970, 1, 1, tzinfo=UTC))
            continue
        row = registration.row(event_id, timing_partner_id)
        row["synced_at"] = datetime.now(UTC)
        out.rows.append(row)
    return out


@dataclass
class Decision:
    sync_type: str  # full | incremental
    reason: str
    cursor: datetime | None
    refetch_all: bool = False


def decide(wm: watermarks.Watermark | None, p: SyncParams, now: datetime) -> Decision:
    if p.force_full_sync:
        return Decision("full", "force_full_sync", None, refetch_all=True)
    if wm is None:
        return Decision("full", "new event", None)
    if wm.last_full_sync_at is None or now - wm.last_full_sync_at > timedelta(days=p.incremental_days):
        return Decision("full", f"last full sync older than incremental_days={p.incremental_days}", None)
    try:
        cursor = parse_datetime(wm.cursor_value, "cursor")
    except ParseError:
        return Decision("full", f"unreadable cursor {wm.cursor_value!r}", None)
    return Decision("incremental", f"since {wm.cursor_value}", cursor)


def _fixable_by_full(exc: Exception) -> bool:
    """Incremental failures a full listing can get past (not throttling, auth, or a dead server)."""
    if isinstance(exc, ThrottleStormError | TransientApiError):
        return False
    if isinstance(exc, PermanentApiError):
        return exc.status not in (401, 403, 404)
    return isinstance(exc, ApiError)


def sync_event(
    item: Mapping[str, Any],
    params: Mapping[str, Any] | None = None,
    *,
    sync_type: str | None = None,
    full: bool = False,
    estimated_size: int | None = None,
    hook: HakuHook | None = None,
    dsn: str | None = None,
) -> dict[str, Any]:
    """Sync one event and commit it in one transaction; return its figures (the audit row's)."""
    p = SyncParams.from_params(params)
    integration = Integration.from_dict(item["integration"])
    event_id = str(item["event_id"])
    started = datetime.now(UTC)
    clock = time.monotonic()
    dsn = dsn or warehouse_dsn()
    hook = hook or hook_for(integration)
    record = audit.AuditRecord(
        PROVIDER, event_id, sync_type or "full", integration.integration_id, integration.timing_partner_id,
        estimated_size=estimated_size, started_at=started,
    )
    session = None
    try:
        with connect(dsn, autocommit=True) as conn:
            wm = watermarks.get(conn, integration.integration_id, scope_of(event_id))
            stored = {r[0]: (r[1], r[2]) for r in conn.execute(SELECT_STORED, (event_id, integration.timing_partner_id))}
        decision = decide(wm, p, started)
        if full and decision.sync_type != "full":
            decision = Decision("full", "backfill", None, refetch_all=p.force_full_sync)
        record.sync_type = sync_type or decision.sync_type
        log.info("event %s (%s): %s sync, %s", event_id, integration.integration_id, decision.sync_type, decision.reason)
        session = hook.get_conn()
        client = HakuClient(session, p.per_page)
        try:
            listing = collect(client, event_id, integration.timing_partner_id, stored, decision.cursor, decision.refetch_all)
        except Exception as exc:
            if decision.sync_type != "incremental" or not _fixable_by_full(exc):
                raise
            log.warning("incremental sync of event %s failed (%s): falling back to a full sync", event_id, exc)
            decision = Decision("full", f"fallback after: {exc}", None)
            record.sync_type = sync_type or "full"
            listing = collect(client, event_id, integration.timing_partner_id, stored, None)
        record.calls = session.stats.calls
        _commit(dsn, integration, event_id, decision, wm, listing, stored, record)
    except Exception as exc:
        record.status = "failed"
        record.error = f"{exc.__class__.__name__}: {exc}"[:2000]
        record.calls = session.stats.calls if session is not None else 0
        try:
            with connect(dsn) as conn, conn.transaction():
                record.write(conn)
        except Exception:  # the original error matters more than the audit row
            log.exception("could not write the failed audit row of event %s", event_id)
        raise
    finally:
        if session is not None:
            session.close()
    figures = {
        "integration_id": integration.integration_id,
        "timing_partner_id": integration.timing_partner_id,
        "event_id": event_id,
        "sync_type": record.sync_type,
        "reason": decision.reason,
        "inserted": record.rows_inserted,
        "updated": record.rows_updated,
        "cancelled": record.rows_removed,
        "rejected": record.rows_rejected,
        "listed": listing.listed,
        "details": listing.details,
        "calls": record.calls,
        "estimated_size": estimated_size,
        "actual_size": record.actual_size,
        "seconds": round(time.monotonic() - clock, 3),
    }
    log.info("event %s done: %s", event_id, figures)
    return figures


def _commit(
    dsn: str,
    integration: Integration,
    event_id: str,
    decision: Decision,
    wm: watermarks.Watermark | None,
    listing: Listing,
    stored: dict[str, tuple[datetime | None, bool]],
    record: audit.AuditRecord,
) -> None:
    """Participants, rejects, cursor and audit row: all in one transaction."""
    old = None
    if wm is not None:
        try:
            old = parse_datetime(wm.cursor_value, "cursor")
        except ParseError:
            old = None
    cursor = listing.newest
    if decision.sync_type == "incremental" and old is not None:
        cursor = old if cursor is None else max(cursor, old)
    if listing.hold is not None:
        cursor = listing.hold if cursor is None else min(cursor, listing.hold)
    cursor_value = format_ts(cursor) if cursor is not None else EPOCH_CURSOR
    record.rows_removed = sum(1 for r in listing.rows if r["is_cancelled"] and not stored.get(r["participant_id"], (None, False))[1])
    record.rows_rejected = len(listing.rejects)
    if decision.sync_type == "full":
        record.actual_size = listing.listed
    with connect(dsn) as conn, conn.transaction():
        conn.execute(LOCK_EVENT, (f"haku:{integration.integration_id}:{event_id}",))
        result = upsert(conn, PARTICIPANTS_TABLE, listing.rows, PARTICIPANT_KEY)
        record.rows_inserted, record.rows_updated = result.inserted, result.updated
        for key, reason, raw in listing.rejects:
            audit.reject(
                conn, provider=PROVIDER, reason=reason, raw=raw, integration_id=integration.integration_id,
                unit=event_id, record_key=key,
            )
        watermarks.advance(
            conn, integration.integration_id, scope_of(event_id), cursor_value,
            full_sync_at=record.started_at if decision.sync_type == "full" else None,
        )
        record.write(conn)


@contextmanager
def quota_for_task(integration: Integration, *, background: bool = False, alone: bool = False) -> Iterator[None]:
    """Enter a task on `integration`'s credential, or raise QuotaSpent (Airflow reschedules the
    task) when its first calls do not fit the quota now. With `alone` the task also holds the
    credential's lane for its whole length, and reschedules while another task holds it."""
    session = hook_for(integration, background=background).get_conn()
    limiter = session.limiter
    try:
        with limiter.lane(session.limiter_key) if alone and limiter is not None else nullcontext(True) as entered:
            if not entered:
                raise QuotaSpent(lane_recheck_s(), in_use=True)
            session.reschedule_if_quota_spent()
            yield
    finally:
        session.close()


def sync_batch(
    items: list[Mapping[str, Any]],
    params: Mapping[str, Any] | None = None,
    *,
    sync: Callable[..., dict[str, Any]] | None = None,
    background: bool = False,
    alone: bool = False,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Sync each event of a mapped batch (with `sync`, default sync_event); one failing event
    fails the task after the others ran and committed. When the first event's credential has its
    quota spent for a while, raises QuotaSpent before any work: Airflow reschedules the task.
    `background` and `alone` are quota_for_task's."""
    sync = sync or sync_event
    results, failures = [], []
    if not items:
        return results
    with quota_for_task(Integration.from_dict(items[0]["integration"]), background=background, alone=alone):
        for item in items:
            try:
                results.append(sync(item, params, **kwargs))
            except Exception as exc:
                log.exception("event %s failed", item.get("event_id"))
                failures.append(f"{item.get('event_id')}: {exc.__class__.__name__}: {exc}")
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(items)} events failed: " + "; ".join(failures))
    return results


# ---------------------------------------------------------------------------------------------
# Run summary

SELECT_RUN_AUDIT = """
SELECT sync_type, status, count(*), sum(rows_inserted), sum(rows_updated), sum(rows_removed),
       sum(rows_rejected), sum(calls), round(sum(duration_s)::numeric, 1)
FROM paceline.sync_audit WHERE provider = 'haku' AND dag_id = %s AND run_id = %s
GROUP BY sync_type, status ORDER BY sync_type, status
"""
SELECT_RUN_FAILURES = """
SELECT integration_id, unit, error FROM paceline.sync_audit
WHERE provider = 'haku' AND dag_id = %s AND run_id = %s AND status = 'failed'
ORDER BY finished_at
"""

SELECT_RUN_SUCCESSES = """
SELECT DISTINCT integration_id, unit FROM paceline.sync_audit
WHERE provider = 'haku' AND dag_id = %s AND run_id = %s AND status = 'success'
"""


def summarize(dag_id: str, run_id: str, dsn: str | None = None) -> dict[str, Any]:
    """The run's audit rows, grouped; raises when an event failed so that the run shows failed."""
    with connect(dsn or warehouse_dsn(), autocommit=True) as conn:
        groups = conn.execute(SELECT_RUN_AUDIT, (dag_id, run_id)).fetchall()
        failures = conn.execute(SELECT_RUN_FAILURES, (dag_id, run_id)).fetchall()
    names = ["sync_type", "status", "units", "inserted", "updated", "removed", "rejected", "calls", "seconds"]
    table = [dict(zip(names, [g[0], g[1], *(int(v or 0) for v in g[2:8]), float(g[8] or 0)], strict=True)) for g in groups]
    for row in table:
        log.info("%s", row)
    if failures:
        # a unit that failed on one try and then succeeded on a retry still left a failed row
        latest_ok = set()
        with connect(dsn or warehouse_dsn(), autocommit=True) as conn:
            latest_ok = {
                (r[0], r[1])
                for r in conn.execute(SELECT_RUN_SUCCESSES, (dag_id, run_id))
            }
        still = [f for f in failures if (f[0], f[1]) not in latest_ok]
        if still:
            raise RuntimeError(
                f"{len(still)} Haku unit(s) failed in this run: "
                + "; ".join(f"{i}/{u}: {(e or '')[:200]}" for i, u, e in still[:20])
            )
    return {"groups": table}


def event_date_of(item: Mapping[str, Any]) -> date | None:
    value = item.get("event_date")
    return date.fromisoformat(value) if value else None
