"""Haku registrations: the Haku adapter of the registration engine.

What is Haku's own (the rest is :mod:`paceline.registrations.engine`'s):

* events are listed with ``show_inactive`` only when past events are wanted, so the scheduled
  sync does not page through every past event every 15 minutes;
* participant summaries are listed newest change first (``sort_column=updated_at``,
  ``sort_direction=desc``) page after page until an EMPTY page, because the server caps
  ``per_page`` silently; an incremental sync stops at the first summary older than the event's
  cursor (inclusive at the cursor: equal stamps are re-read, the upsert dedupes them);
* a registration's detail is fetched only when the summary is new or its ``updated_at``
  differs from the stored one, so an unchanged event costs its listing pages and nothing more.

An event commits **page by page**: each page's registrations, rejected records and the sync's
progress (the next page, the newest stamp seen, where the cursor must be held) commit together
in the watermark scope ``resume:<event_id>``. A killed task loses at most one page; the next sync
of the event resumes from the committed page. The event's cursor (scope ``event:<event_id>``) and
its audit row commit with the last page. A scheduled sync spends at most ``event_call_budget``
calls on one event (default: an eighth of the credential's hourly quota); a large first sync
then continues in the next runs, and the events near in time keep their 15-minute cadence.

A detail that keeps failing (5xx after the retries, or an answer that cannot be parsed) is kept
in ``paceline.rejected_records``, the cursor is held below it (the next sync asks again) and the
event completes. A registration listed and then gone (404) is skipped.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from paceline import audit, watermarks
from paceline.db.warehouse import connect, dsn_from_airflow, upsert
from paceline.http.limiter import QuotaSpent, hour_seconds, lane_recheck_s, reschedule_after_s
from paceline.http.session import (
    ApiError,
    PermanentApiError,
    RetryPolicy,
    ThrottleStormError,
    TransientApiError,
    redact,
)
from paceline.providers.haku.client import DEFAULT_PER_PAGE, HakuClient
from paceline.providers.haku.hook import DEFAULT_CALLS_PER_HOUR, HakuHook
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
from paceline.registrations import engine
from paceline.registrations.engine import ParamError, PlanFailure, SyncParams
from paceline.registrations.planning import MAX_MAPPED_ITEMS, Integration, mapped_batches, select_integrations

log = logging.getLogger(__name__)

PROVIDER = "haku"
PARTICIPANTS_TABLE = "registrations.haku_participants"
PARTICIPANT_KEY = ["event_id", "participant_id", "timing_partner_id"]
EVENTS_TABLE = "registrations.haku_events"
EVENT_KEY = ["timing_partner_id", "event_id"]
REQUIRED_FIELDS = ("login", "password")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_CURSOR = "1970-01-01T00:00:00Z"  # "read everything" (an empty event, or a held cursor)
BUDGET_SHARE_OF_HOUR = 8  # a scheduled sync spends at most 1/8 of the hourly quota on one event
PROGRESS_EVERY_PAGES = 10

SELECT_STORED = """
SELECT participant_id, updated_at, is_cancelled FROM registrations.haku_participants
WHERE event_id = %s AND timing_partner_id = %s
"""
SELECT_EVENT_WATERMARKS = """
SELECT scope, updated_at FROM paceline.watermarks WHERE integration_id = %s AND scope LIKE 'event:%%'
"""
# A credential shared by several timing partners is synced once: its rows are copied to the others.
COPY_EVENT_TO_MIRROR = """
INSERT INTO registrations.haku_participants AS t
    (event_id, participant_id, timing_partner_id, first_name, last_name, email, is_cancelled, updated_at, raw, synced_at)
SELECT event_id, participant_id, %(mirror)s, first_name, last_name, email, is_cancelled, updated_at, raw, synced_at
FROM registrations.haku_participants WHERE event_id = %(event_id)s AND timing_partner_id = %(primary)s
ON CONFLICT (event_id, participant_id, timing_partner_id) DO UPDATE SET
    first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name, email = EXCLUDED.email,
    is_cancelled = EXCLUDED.is_cancelled, updated_at = EXCLUDED.updated_at, raw = EXCLUDED.raw,
    synced_at = EXCLUDED.synced_at
WHERE (t.first_name, t.last_name, t.email, t.is_cancelled, t.updated_at, t.raw)
    IS DISTINCT FROM (EXCLUDED.first_name, EXCLUDED.last_name, EXCLUDED.email, EXCLUDED.is_cancelled,
                      EXCLUDED.updated_at, EXCLUDED.raw)
"""
SELECT_RESUMING = """
SELECT substr(scope, 8) FROM paceline.watermarks WHERE integration_id = %s AND scope LIKE 'resume:%%'
"""


def scope_of(event_id: str) -> str:
    return f"event:{event_id}"


def resume_scope_of(event_id: str) -> str:
    return f"resume:{event_id}"


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


def default_call_budget(integration: Integration) -> int:
    return max(1, (integration.calls_per_hour or DEFAULT_CALLS_PER_HOUR) // BUDGET_SHARE_OF_HOUR)


# ---------------------------------------------------------------------------------------------
# Planning


def list_events(
    hook: HakuHook, per_page: int = DEFAULT_PER_PAGE, *, show_inactive: bool = True
) -> tuple[list[HakuEvent], list[tuple[Any, str]], int]:
    """The credential's events (past ones only with `show_inactive`); rejects; calls spent."""
    session = hook.get_conn()
    try:
        client = HakuClient(session, per_page)
        events, rejects, seen = [], [], set()
        for raw in client.iter_events(show_inactive=show_inactive):
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
    integrations: list[Integration], per_page: int, *, show_inactive: bool, background: bool = False,
    dsn: str | None = None, mirrors: Mapping[str, list[Integration]] | None = None,
) -> dict[str, tuple[Integration, list[HakuEvent]]]:
    """List every integration's events and upsert them (one transaction per integration).

    An integration whose listing fails is audited as a plan failure (the run's summary names it)
    and the others go on: one partner's expired credential must not stop every partner's sync.
    `background`: the listing calls are background calls (a backfill's plan), which let a
    scheduled sync of the same credential go first. `mirrors`: per integration id, the other
    integrations of its credential, whose partners get the same event rows.
    """
    mirrors = mirrors or {}
    found: dict[str, tuple[Integration, list[HakuEvent]]] = {}
    failures = []
    for integration in integrations:
        started = datetime.now(UTC)
        try:
            events, rejects, calls = list_events(hook_for(integration, background=background), per_page,
                                                 show_inactive=show_inactive)
        except ApiError as exc:
            failure = PlanFailure(integration.integration_id, integration.timing_partner_id,
                                  f"listing events failed: {redact(str(exc))}")
            engine.record_plan_failure(PROVIDER, failure, started=started)
            failures.append(str(failure))
            continue
        with connect(dsn) as conn, conn.transaction():
            owners = [integration, *mirrors.get(integration.integration_id, [])]
            result = upsert(conn, EVENTS_TABLE, [event_row(i, e) for i in owners for e in events], EVENT_KEY)
            for raw, reason in rejects:
                audit.reject(conn, provider=PROVIDER, reason=reason, raw=raw, integration_id=integration.integration_id,
                             unit="events")
            audit.AuditRecord(
                # unit "plan": this attempt's listing succeeded (a retried plan replaces an earlier failure)
                PROVIDER, engine.PLAN_UNIT, "events", integration.integration_id, integration.timing_partner_id,
                rows_inserted=result.inserted, rows_updated=result.updated, rows_rejected=len(rejects),
                calls=calls, actual_size=len(events), started_at=started,
            ).write(conn)
        log.info("%s: %d events (%d new, %d changed)", integration.integration_id, len(events), result.inserted, result.updated)
        found[integration.integration_id] = (integration, events)
    if failures and not found:
        raise RuntimeError("listing events failed for every integration: " + "; ".join(failures))
    return found


def select_and_validate(timing_partner_id: int | None = None, integration_id: str | None = None) -> list[Integration]:
    """The run's usable integrations (engine.select_run_integrations), narrowed to one when named."""
    if integration_id is not None:
        with connect() as conn:
            known = [i for i in select_integrations(conn, PROVIDER, None) if i.integration_id == integration_id]
        if not known:
            with connect() as conn:
                valid = ", ".join(i.integration_id for i in select_integrations(conn, PROVIDER, None))
            raise ParamError(f"integration_id {integration_id!r} names no enabled haku integration; "
                             f"valid: {valid or '(none enabled)'}")
        timing_partner_id = known[0].timing_partner_id
    integrations = engine.select_run_integrations(PROVIDER, HakuHook, REQUIRED_FIELDS, timing_partner_id)
    if integration_id is not None:
        integrations = [i for i in integrations if i.integration_id == integration_id]
        if not integrations:
            raise engine.ConfigError(f"integration {integration_id} is misconfigured (see the plan's log)")
    return integrations


def plan(params: Mapping[str, Any] | None, now: datetime | None = None, dsn: str | None = None) -> list[list[dict[str, Any]]]:
    """The run's work: batches of events (one per mapped task while there are few enough).

    Due events by proximity (undated ones as far away), nearest first, and every event whose
    last sync stopped part-way (it resumes)."""
    p = SyncParams.from_params(params)
    now = now or datetime.now(UTC)
    groups = engine.credential_groups(select_and_validate(p.timing_partner_id), HakuHook)
    mirrors = {group[0].integration_id: group[1:] for group in groups}
    found = discover([group[0] for group in groups], p.per_page or DEFAULT_PER_PAGE, show_inactive=not p.future_only,
                     dsn=dsn, mirrors=mirrors)
    planned = []
    with connect(dsn, autocommit=True) as conn:
        for integration, events in found.values():
            last_synced = {
                scope.removeprefix("event:"): at
                for scope, at in conn.execute(SELECT_EVENT_WATERMARKS, (integration.integration_id,)).fetchall()
            }
            resuming = {row[0] for row in conn.execute(SELECT_RESUMING, (integration.integration_id,))}
            chosen = []
            for event in events:
                if p.future_only and event.event_date is not None and event.event_date < now.date():
                    continue
                if p.due_only and not p.force_full_sync and event.event_id not in resuming:
                    if not engine.is_due_event(event.event_date, last_synced.get(event.event_id), now, p.proximity_tiers):
                        continue
                chosen.append(event)
            chosen.sort(key=lambda e: abs((e.event_date - now.date()).days) if e.event_date else 10**6)
            shared = [m.to_dict() for m in mirrors.get(integration.integration_id, [])]
            planned.append([work_item(integration, e, **({"mirrors": shared} if shared else {})) for e in chosen])
    batches = mapped_batches(planned, MAX_MAPPED_ITEMS)
    log.info("planned %d Haku events over %d integrations in %d mapped tasks", sum(map(len, batches)), len(found),
             len(batches))
    return batches


# ---------------------------------------------------------------------------------------------
# One event


@dataclass
class Progress:
    """Where a sync of an event stands; committed with each page, so a kill loses one page at most."""

    full: bool
    reason: str
    since: str | None  # the incremental cursor (None: the whole listing)
    refetch_all: bool = False
    next_page: int = 1
    newest: str | None = None  # newest summary stamp seen since the sync began: the next cursor
    hold: str | None = None  # the cursor may not pass this (a rejected record lies here)
    hold_next: bool = False  # a summary without a readable stamp: hold at the next stamp below it
    listed: int = 0

    def encode(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def decode(cls, value: str) -> Progress | None:
        try:
            return cls(**json.loads(value))
        except (TypeError, ValueError):
            return None

    @property
    def sync_type(self) -> str:
        return "full" if self.full else "incremental"


@dataclass
class PageResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[tuple[str | None, str, Any]] = field(default_factory=list)  # (key, reason, raw)
    details: int = 0
    missing: int = 0
    reached_cursor: bool = False


def _ts(value: str | None) -> datetime | None:
    return parse_datetime(value, "cursor") if value else None


def _hold(progress: Progress, at: datetime | None) -> None:
    at = at or EPOCH
    current = _ts(progress.hold)
    if current is None or at < current:
        progress.hold = format_ts(at)


def read_page(
    client: HakuClient, event_id: str, timing_partner_id: int, page: list[Any],
    stored: dict[str, tuple[datetime | None, bool]], progress: Progress, seen: set[str],
) -> PageResult:
    """One page of summaries: the details it needs, parsed; rejects; whether the cursor was reached."""
    out = PageResult()
    since = _ts(progress.since)
    needed: list[ParticipantSummary] = []
    for raw in page:
        try:
            summary = parse_summary(raw)
        except ParseError as exc:
            number = registration_number_of(raw)
            if number is None:
                out.rejects.append((None, f"participant summary: {exc}", raw))
                progress.hold_next = True
                continue
            summary = ParticipantSummary(number, None, False)  # the detail will tell
        if summary.updated_at is not None:
            if progress.hold_next:
                _hold(progress, summary.updated_at)
                progress.hold_next = False
            if since is not None and summary.updated_at < since:
                out.reached_cursor = True  # sorted newest first: everything after this is older still
                break
            newest = _ts(progress.newest)
            if newest is None or summary.updated_at > newest:
                progress.newest = format_ts(summary.updated_at)
        if summary.registration_number in seen:
            continue  # a change during paging shifted it onto the next page
        seen.add(summary.registration_number)
        progress.listed += 1
        before = stored.get(summary.registration_number)
        if progress.refetch_all or before is None or summary.updated_at is None or before[0] != summary.updated_at:
            needed.append(summary)
    for summary in needed:
        number = summary.registration_number
        try:
            raw = client.registration(event_id, number)
        except PermanentApiError as exc:
            if exc.status == 404:
                log.warning("registration %s of event %s vanished after listing", number, event_id)
                out.missing += 1
                continue
            if exc.status in (401, 403):
                raise
            raw, failed = None, f"HTTP {exc.status}"
        except TransientApiError as exc:
            raw, failed = None, f"HTTP {exc.status}" if exc.status else "no answer"
        else:
            failed = None
        if failed is not None:  # kept failing after the session's retries: reject it, finish the event
            log.warning("registration %s of event %s: detail failed (%s); kept in rejected_records", number,
                        event_id, failed)
            out.rejects.append((number, f"registration detail failed after retries: {failed}",
                                {"registration_number": number, "failure": failed}))
            _hold(progress, summary.updated_at)
            continue
        out.details += 1
        try:
            registration = parse_registration(raw)
        except ParseError as exc:
            out.rejects.append((number, f"registration detail: {exc}", raw))
            _hold(progress, summary.updated_at)
            continue
        if registration.registration_number != number:
            out.rejects.append((number, "registration detail answers for another registration", raw))
            _hold(progress, summary.updated_at)
            continue
        row = registration.row(event_id, timing_partner_id)
        row["synced_at"] = datetime.now(UTC)
        out.rows.append(row)
    return out


def _start(
    wm: watermarks.Watermark | None, resumed: Progress | None, p: SyncParams, now: datetime, full: bool
) -> Progress:
    """Where this sync starts: where the last one stopped, or the engine's full/incremental rule."""
    if resumed is not None and (resumed.full or not (full or p.force_full_sync)):
        resumed.reason = f"resuming at page {resumed.next_page} ({resumed.reason})"
        return resumed
    decision = engine.decide(wm is not None, wm.last_full_sync_at if wm else None, p, now)
    if full and not decision.full:
        decision = engine.Decision(True, "backfill")
    if decision.full:
        return Progress(True, decision.reason, None, refetch_all=p.force_full_sync)
    try:
        cursor = parse_datetime(wm.cursor_value, "cursor") if wm else None
    except ParseError:
        return Progress(True, f"unreadable cursor {wm.cursor_value!r}", None)
    return Progress(False, f"since {wm.cursor_value}", format_ts(cursor) if cursor else None)


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
    call_budget: int | None = None,
) -> dict[str, Any]:
    """Sync one event, committing page by page under the event's writer lock; return its figures.

    `call_budget`: stop after about this many calls, leaving the rest for the event's next sync
    (the audit row then says ``partial``); None: no budget.
    """
    p = SyncParams.from_params(params)
    integration = Integration.from_dict(item["integration"])
    event_id = str(item["event_id"])
    dsn = dsn or warehouse_dsn()
    with engine.event_writer(PROVIDER, integration.timing_partner_id, event_id, dsn=dsn):
        return _sync_event_locked(item, p, integration, event_id, sync_type, full, estimated_size,
                                  hook or hook_for(integration), dsn, call_budget)


def _sync_event_locked(
    item: Mapping[str, Any], p: SyncParams, integration: Integration, event_id: str, sync_type: str | None,
    full: bool, estimated_size: int | None, hook: HakuHook, dsn: str, call_budget: int | None,
) -> dict[str, Any]:
    started = datetime.now(UTC)
    clock = time.monotonic()
    record = audit.AuditRecord(
        PROVIDER, event_id, sync_type or "full", integration.integration_id, integration.timing_partner_id,
        estimated_size=estimated_size, started_at=started,
    )
    session = None
    details = 0
    try:
        with connect(dsn, autocommit=True) as conn:
            wm = watermarks.get(conn, integration.integration_id, scope_of(event_id))
            resume_wm = watermarks.get(conn, integration.integration_id, resume_scope_of(event_id))
            stored = {r[0]: (r[1], r[2]) for r in conn.execute(SELECT_STORED, (event_id, integration.timing_partner_id))}
        progress = _start(wm, Progress.decode(resume_wm.cursor_value) if resume_wm else None, p, started, full)
        record.sync_type = sync_type or progress.sync_type
        log.info("event %s (%s): %s sync, %s", event_id, integration.integration_id, progress.sync_type, progress.reason)
        session = hook.get_conn()
        client = HakuClient(session, p.per_page or DEFAULT_PER_PAGE)
        try:
            done, details = _sync_pages(client, event_id, integration, stored, progress, record, dsn, call_budget,
                                        estimated_size)
        except Exception as exc:
            if progress.full or progress.next_page > 1 or not _fixable_by_full(exc):
                raise
            log.warning("incremental sync of event %s failed (%s): falling back to a full sync", event_id, exc)
            progress = Progress(True, f"fallback after: {exc}", None)
            record.sync_type = sync_type or "full"
            done, details = _sync_pages(client, event_id, integration, stored, progress, record, dsn, call_budget,
                                        estimated_size)
        record.calls = session.stats.calls
        _finish(dsn, integration, event_id, wm, progress, record, done, engine.mirrors_of(item))
    except Exception as exc:
        record.status = "failed"
        record.error = redact(f"{exc.__class__.__name__}: {exc}")[:2000]
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
        "status": record.status,
        "reason": progress.reason,
        "inserted": record.rows_inserted,
        "updated": record.rows_updated,
        "cancelled": record.rows_removed,
        "rejected": record.rows_rejected,
        "listed": progress.listed,
        "details": details,
        "calls": record.calls,
        "estimated_size": estimated_size,
        "actual_size": record.actual_size,
        "seconds": round(time.monotonic() - clock, 3),
    }
    log.info("event %s %s: %s", event_id, "done" if record.status == "success" else "stopped part-way", figures)
    return figures


def _sync_pages(
    client: HakuClient, event_id: str, integration: Integration, stored: dict[str, tuple[datetime | None, bool]],
    progress: Progress, record: audit.AuditRecord, dsn: str, call_budget: int | None, estimated_size: int | None,
) -> tuple[bool, int]:
    """Read and commit pages from progress.next_page; (whether the listing was read to its end, details)."""
    seen: set[str] = set()
    details = 0
    first_calls = client.calls
    pages = 0
    for page in client.participant_pages(event_id, start_page=progress.next_page):
        result = read_page(client, event_id, integration.timing_partner_id, page, stored, progress, seen)
        details += result.details
        progress.next_page += 1
        _commit_page(dsn, integration, event_id, result, stored, progress, record)
        pages += 1
        if result.reached_cursor:
            return True, details
        spent = client.calls - first_calls
        if pages % PROGRESS_EVERY_PAGES == 0:
            _log_progress(event_id, integration, progress, spent, estimated_size)
        if call_budget is not None and spent >= call_budget:
            log.info("event %s: %d calls spent (budget %d); the rest follows in its next sync, from page %d",
                     event_id, spent, call_budget, progress.next_page)
            return False, details
    return True, details


def _log_progress(
    event_id: str, integration: Integration, progress: Progress, calls: int, estimated_size: int | None
) -> None:
    """How far a long event has come, and when it ends at the credential's quota."""
    quota = integration.calls_per_hour or DEFAULT_CALLS_PER_HOUR
    if estimated_size:
        per_page = max(1, progress.listed // max(1, progress.next_page - 1))
        remaining = max(0, estimated_size - progress.listed)
        remaining_calls = remaining + remaining // per_page  # a detail each, and the listing pages
        log.info("event %s: %d of ~%d registrations listed, %d calls so far; ~%d calls left, ETA %.1f h at %d/h",
                 event_id, progress.listed, estimated_size, calls, remaining_calls, remaining_calls / quota, quota)
    else:
        log.info("event %s: %d registrations listed, page %d, %d calls so far", event_id, progress.listed,
                 progress.next_page, calls)


def _commit_page(
    dsn: str, integration: Integration, event_id: str, result: PageResult,
    stored: dict[str, tuple[datetime | None, bool]], progress: Progress, record: audit.AuditRecord,
) -> None:
    """A page's registrations, its rejects and the sync's progress: one transaction."""
    cancelled = sum(1 for r in result.rows if r["is_cancelled"] and not stored.get(r["participant_id"], (None, False))[1])
    with connect(dsn) as conn, conn.transaction():
        written = upsert(conn, PARTICIPANTS_TABLE, result.rows, PARTICIPANT_KEY, not_older_by="updated_at")
        for key, reason, raw in result.rejects:
            audit.reject(conn, provider=PROVIDER, reason=reason, raw=raw, integration_id=integration.integration_id,
                         unit=event_id, record_key=key)
        watermarks.advance(conn, integration.integration_id, resume_scope_of(event_id), progress.encode())
    for row in result.rows:  # later pages of this sync compare against what is now stored
        stored[row["participant_id"]] = (row["updated_at"], row["is_cancelled"])
    record.rows_inserted += written.inserted
    record.rows_updated += written.updated
    record.rows_removed += cancelled
    record.rows_rejected += len(result.rejects)


def _finish(
    dsn: str, integration: Integration, event_id: str, wm: watermarks.Watermark | None, progress: Progress,
    record: audit.AuditRecord, done: bool, mirrors: Sequence[Integration] = (),
) -> None:
    """The last page read: the cursor, the end of the resume state and the audit row, in one
    transaction; a sync stopped by its budget only audits (its progress is already committed).
    The partners sharing the credential (`mirrors`) get the event's rows, cursor and audit row."""
    with connect(dsn) as conn, conn.transaction():
        for mirror in mirrors:
            conn.execute(COPY_EVENT_TO_MIRROR, {"mirror": mirror.timing_partner_id, "event_id": event_id,
                                                "primary": integration.timing_partner_id})
        if not done:
            record.status = "partial"
            record.error = f"stopped by its call budget; resumes at page {progress.next_page}"
            record.write(conn)
            return
        old = None
        if wm is not None:
            try:
                old = parse_datetime(wm.cursor_value, "cursor")
            except ParseError:
                old = None
        cursor = _ts(progress.newest)
        if old is not None and old <= record.started_at:  # never back (a cursor in the future is not kept)
            cursor = old if cursor is None else max(cursor, old)
        if progress.hold_next:  # nothing below the unreadable summary: make the next sync read everything
            _hold(progress, EPOCH)
        hold = _ts(progress.hold)
        if hold is not None:
            cursor = hold if cursor is None else min(cursor, hold)
        if progress.full:
            record.actual_size = progress.listed
        watermarks.advance(conn, integration.integration_id, scope_of(event_id),
                           format_ts(cursor) if cursor is not None else EPOCH_CURSOR,
                           full_sync_at=record.started_at if progress.full else None)
        watermarks.reset(conn, integration.integration_id, resume_scope_of(event_id))
        record.write(conn)
        for mirror in mirrors:  # the same cursor: the next sync of the shared credential covers both
            watermarks.advance(conn, mirror.integration_id, scope_of(event_id),
                               format_ts(cursor) if cursor is not None else EPOCH_CURSOR,
                               full_sync_at=record.started_at if progress.full else None)
            # sync_type "mirror": its rows were copied from the primary's sync (no call of its own)
            audit.AuditRecord(PROVIDER, event_id, "mirror", mirror.integration_id, mirror.timing_partner_id,
                              actual_size=record.actual_size, started_at=record.started_at).write(conn)


@contextmanager
def quota_for_task(integration: Integration, *, background: bool = False, alone: bool = False) -> Iterator[Any]:
    """Enter a task on `integration`'s credential, or raise QuotaSpent (Airflow reschedules the
    task) when its first calls do not fit the quota now. With `alone` the task also holds the
    credential's lane for its whole length (yielded: the holder may say when it expects to be
    done), and while another task holds it, reschedules until then."""
    session = hook_for(integration, background=background).get_conn()
    limiter = session.limiter
    try:
        with limiter.lane(session.limiter_key) if alone and limiter is not None else nullcontext(None) as lane:
            if alone and limiter is not None and not lane:
                raise QuotaSpent(turned_away_s(limiter, session.limiter_key), in_use=True)
            session.reschedule_if_quota_spent()
            yield lane
    finally:
        session.close()


def turned_away_s(limiter: Any, key: str) -> float:
    """How long a task turned away from a credential's lane stays up for reschedule: until the
    holder expects to be done (at least reschedule_after_s()), or lane_recheck_s() when the holder
    said nothing. A holder that finishes early costs its credential that much idle; one that
    finishes late sends the waiting tasks away once more, with its new estimate."""
    free_in = limiter.lane_free_in_s(key)
    return lane_recheck_s() if free_in is None else max(reschedule_after_s(), free_in)


def scheduled_sync(item: Mapping[str, Any], params: Mapping[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """A scheduled sync of one event: at most ``event_call_budget`` calls (param; 0: no budget)."""
    budget = (params or {}).get("event_call_budget")
    if budget in (None, ""):
        budget = default_call_budget(Integration.from_dict(item["integration"]))
    budget = int(budget)
    if budget < 0:
        raise ParamError(f"event_call_budget must be 0 (no budget) or more, got {budget}")
    return sync_event(item, params, call_budget=budget or None, **kwargs)


def sync_batch(
    items: list[Mapping[str, Any]],
    params: Mapping[str, Any] | None = None,
    *,
    sync: Callable[..., dict[str, Any]] | None = None,
    background: bool = False,
    alone: bool = False,
    calls_of: Callable[[Mapping[str, Any]], int | None] | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Sync each event of a mapped batch (with `sync`, default scheduled_sync); one failing event
    fails the task after the others ran and committed. When the first event's credential has its
    quota spent for a while, raises QuotaSpent before any work: Airflow reschedules the task.
    `background` and `alone` are quota_for_task's; with `calls_of` (an event's expected calls)
    a lane holder says before each event when it expects to be done, at the credential's quota."""
    SyncParams.from_params(params)  # bad params fail here, before any call
    sync = sync or scheduled_sync
    if not items:
        return []
    integration = Integration.from_dict(items[0]["integration"])
    calls_per_s = (integration.calls_per_hour or DEFAULT_CALLS_PER_HOUR) / hour_seconds()
    left = list(items)

    def sync_one(item: Mapping[str, Any]) -> dict[str, Any]:
        expected = [calls_of(i) for i in left] if calls_of is not None and lane else []
        if expected and None not in expected:
            lane.expect_done_in(sum(expected) / calls_per_s)
        left.pop(0)  # run_batch syncs the items in order
        return sync(item, params, **kwargs)

    with quota_for_task(integration, background=background, alone=alone) as lane:
        return engine.run_batch(items, sync_one,
                                lambda item: f"{item['integration']['integration_id']} event {item.get('event_id')}")


def summarize(dag_id: str, run_id: str, task_states: Mapping[str, Any] | None = None,
              dsn: str | None = None) -> dict[str, Any]:
    """The run's outcome (engine.summarize_run); raises engine.RunFailed when anything failed."""
    return engine.summarize_run(PROVIDER, dag_id, run_id, task_states, dsn=dsn)


def event_date_of(item: Mapping[str, Any]) -> date | None:
    value = item.get("event_date")
    return date.fromisoformat(value) if value else None
