"""The registration-sync engine: what every provider's sync shares, written once.

A provider module (``runsignup_sync``, ``haku_sync``) is an adapter: it lists a credential's
events, fetches an event's registrations and maps them to rows. Everything else lives here and
never imports a provider module:

* the DAG params (:class:`SyncParams`), parsed strictly: bad input raises :class:`ParamError`;
* which integrations a run covers, each connection checked; a misconfigured integration is
  recorded as a plan failure while the others still sync (:func:`select_run_integrations`);
* when an event is due (:func:`is_due_event`) and whether it gets a full re-read
  (:func:`decide`): one rule for every provider, counted from the event's last *full* sync;
* one writer per event (:func:`event_writer`), shared by every DAG and backfill;
* the mapped-task loop (:func:`run_batch`) and the run's verdict (:func:`summarize_run`), which
  fails the run, naming what failed, when anything failed: the plan, a connection, an event, or a
  task that died without an audit row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import psycopg

from paceline import audit
from paceline.db import warehouse
from paceline.http.session import redact
from paceline.registrations.planning import (
    DEFAULT_TIERS,
    Integration,
    ProximityTier,
    is_due,
    select_integrations,
    tiers_from_param,
    validate_connection,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

PLAN_UNIT = "plan"  # the audit unit of a plan-level failure of one integration
FAILED_TASK_STATES = frozenset({"failed", "upstream_failed"})
TRUE_WORDS = frozenset({"1", "true", "t", "yes", "y", "on"})
FALSE_WORDS = frozenset({"0", "false", "f", "no", "n", "off", ""})

# One writer per event, across every DAG, run, backfill and worker: a session-level advisory lock
# on a connection of its own (the server frees it if the worker dies).
LOCK_EVENT_WRITER = "SELECT pg_advisory_lock(hashtextextended(%s, 0))"
TRY_LOCK_EVENT_WRITER = "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))"
SELECT_RUN_AUDIT = """
SELECT DISTINCT ON (integration_id, unit) integration_id, timing_partner_id, unit, sync_type, status,
       rows_inserted, rows_updated, rows_removed, rows_rejected, calls, duration_s, error
FROM paceline.sync_audit WHERE provider = %s AND dag_id = %s AND run_id = %s
ORDER BY integration_id, unit, finished_at DESC, audit_id DESC
"""
AUDIT_COLUMNS = ("integration_id", "timing_partner_id", "unit", "sync_type", "status", "inserted", "updated",
                 "removed", "rejected", "calls", "duration_s", "error")


class ParamError(ValueError):
    """A DAG param that cannot be used; retrying cannot fix it (the message says what to change)."""


class ConfigError(ValueError):
    """Missing or wrong configuration (an integration, a connection); retrying cannot fix it."""


class RunFailed(RuntimeError):
    """The run did not do all of its work; the message names each failure."""


# ---------------------------------------------------------------------------------------------
# Params


def _flag(params: Mapping[str, Any], name: str, default: bool) -> bool:
    value = params.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise ParamError(f"{name} must be true or false, got {value!r}")


def whole_param(params: Mapping[str, Any], name: str, default: int | None, minimum: int) -> int | None:
    """A whole-number param (a string of digits too) of at least `minimum`; ParamError otherwise."""
    value = params.get(name, default)
    if value is None or value == "" or value in ("null", "None"):
        return default
    if isinstance(value, bool):
        raise ParamError(f"{name} must be a whole number, got {value!r}")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ParamError(f"{name} must be a whole number, got {value!r}") from None
    if number < minimum:
        raise ParamError(f"{name} must be {minimum} or more, got {number}")
    return number


@dataclass(frozen=True)
class SyncParams:
    """The registration DAGs' params with their defaults, one parser for every provider."""

    force_full_sync: bool = False
    incremental_days: int = 7
    timing_partner_id: int | None = None
    future_only: bool = True
    due_only: bool = True
    proximity_tiers: tuple[ProximityTier, ...] = DEFAULT_TIERS
    per_page: int | None = None  # None: the provider's default page size

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> SyncParams:
        params = dict(params or {})
        try:
            tiers = tiers_from_param(params.get("proximity_tiers"))
        except ValueError as exc:
            raise ParamError(str(exc)) from None
        return cls(
            force_full_sync=_flag(params, "force_full_sync", False),
            incremental_days=whole_param(params, "incremental_days", 7, 0) or 0,
            timing_partner_id=whole_param(params, "timing_partner_id", None, 0),
            future_only=_flag(params, "future_only", True),
            due_only=_flag(params, "due_only", True),
            proximity_tiers=tiers,
            per_page=whole_param(params, "per_page", None, 1),
        )


# ---------------------------------------------------------------------------------------------
# Integrations of a run


@dataclass
class PlanFailure:
    integration_id: str
    timing_partner_id: int | None
    error: str

    def __str__(self) -> str:
        return f"{self.integration_id} (timing partner {self.timing_partner_id}): {self.error}"


def record_plan_failure(provider: str, failure: PlanFailure, *, calls: int = 0, started: datetime | None = None) -> None:
    """Audit a plan-level failure of one integration, so that the run's summary names it."""
    log.error("%s plan: %s", provider, failure)
    try:
        with warehouse.unit_of_work() as conn:
            audit.AuditRecord(provider, PLAN_UNIT, PLAN_UNIT, integration_id=failure.integration_id,
                              timing_partner_id=failure.timing_partner_id, status="failed", calls=calls,
                              error=redact(failure.error)[:2000],
                              started_at=started or datetime.now(UTC)).write(conn)
    except Exception:  # the warehouse may be what failed; the plan's own log line says enough
        log.exception("could not audit the plan failure of %s", failure.integration_id)


def select_run_integrations(
    provider: str, hook_cls: type, required_fields: Sequence[str], timing_partner_id: int | None
) -> list[Integration]:
    """The run's enabled integrations whose configuration is usable.

    A `timing_partner_id` that names no enabled integration is a param error (nothing runs). An
    integration whose connection is missing or incomplete, or whose quota override is not
    positive, is recorded as a plan failure and left out, while the others sync; when every one
    is misconfigured the plan fails with a ConfigError listing what to fix.
    """
    with warehouse.connect() as conn:
        try:
            integrations = select_integrations(conn, provider, timing_partner_id)
        except ValueError as exc:
            raise ParamError(str(exc)) from None
    if not integrations:
        raise ConfigError(f"no enabled {provider} integration in registrations.provider_integrations")
    usable, failures = [], []
    for integration in integrations:
        try:
            check_quota(integration)
            validate_connection(hook_cls, integration.conn_id, required_fields)
        except ValueError as exc:
            failures.append(PlanFailure(integration.integration_id, integration.timing_partner_id, str(exc)))
            continue
        usable.append(integration)
    for failure in failures:
        record_plan_failure(provider, failure)
    if not usable:
        raise ConfigError("every selected integration is misconfigured: " + "; ".join(map(str, failures)))
    return usable


def credential_groups(integrations: Sequence[Integration], hook_cls: type) -> list[list[Integration]]:
    """The integrations grouped by the credential they use (the connection's host and login), the
    first of each group its primary. A credential shared by several timing partners is listed and
    synced once per event; the adapters then write the event's rows for every partner of the group
    (its *mirrors*), so no call is spent twice on one credential's quota."""
    groups: dict[tuple[str, str], list[Integration]] = {}
    for integration in integrations:
        conn = hook_cls(integration.conn_id, use_limiter=False).connection
        key = ((conn.host or "").rstrip("/").lower(), conn.login or integration.conn_id)
        groups.setdefault(key, []).append(integration)
    for group in groups.values():
        if len(group) > 1:
            log.info("credential shared by %s: listed and synced once, written for each",
                     ", ".join(i.integration_id for i in group))
    return list(groups.values())


def mirrors_of(item: Mapping[str, Any]) -> list[Integration]:
    """The other integrations of a work item's credential, whose partners get the same rows."""
    return [Integration.from_dict(dict(m)) for m in item.get("mirrors") or ()]


def check_quota(integration: Integration) -> None:
    """A quota override of 0 or less would stop (or, negative, spin) the limiter: refuse it."""
    for name in ("calls_per_hour", "calls_per_second"):
        value = getattr(integration, name)
        if value is not None and value <= 0:
            raise ConfigError(
                f"registrations.provider_integrations.{name} is {value} for {integration.integration_id}; "
                "set a positive number, or NULL for the provider's default"
            )


# ---------------------------------------------------------------------------------------------
# Due events and the full/incremental rule


def is_due_event(
    event_day: date | None, last_synced_at: datetime | None, now: datetime, tiers: Sequence[ProximityTier]
) -> bool:
    """Whether an event is due by its proximity tier. An event without a date counts as far away
    (the last tier, daily by default): without a date it cannot be near."""
    if event_day is None:
        if last_synced_at is None:
            return True
        last = last_synced_at if last_synced_at.tzinfo else last_synced_at.replace(tzinfo=UTC)
        return now - last >= tiers[-1].every - min(timedelta(minutes=2), tiers[-1].every / 10)
    return is_due(event_day, last_synced_at, now, tiers)


@dataclass(frozen=True)
class Decision:
    full: bool
    reason: str

    @property
    def sync_type(self) -> str:
        return "full" if self.full else "incremental"


def decide(
    has_cursor: bool, last_full_sync_at: datetime | None, params: SyncParams, now: datetime
) -> Decision:
    """Full or incremental, one rule for every provider: full for a new event, on
    ``force_full_sync``, and when the event's last *full* sync is older than ``incremental_days``
    (incrementals do not reset that clock: only a full read reconciles vanished registrations)."""
    if params.force_full_sync:
        return Decision(True, "force_full_sync")
    if not has_cursor:
        return Decision(True, "new event (no cursor)")
    if last_full_sync_at is None:
        return Decision(True, "no full sync on record")
    last = last_full_sync_at if last_full_sync_at.tzinfo else last_full_sync_at.replace(tzinfo=UTC)
    age = now - last
    if age > timedelta(days=params.incremental_days):
        return Decision(True, f"last full sync {age.days} days ago (> incremental_days={params.incremental_days})")
    return Decision(False, "last full sync is recent")


# ---------------------------------------------------------------------------------------------
# One writer per event


def event_lock_name(provider: str, timing_partner_id: int, event_key: str) -> str:
    return f"paceline:event:{provider}:{int(timing_partner_id)}:{event_key}"


@contextmanager
def event_writer(provider: str, timing_partner_id: int, *event_keys: str, dsn: str | None = None) -> Iterator[None]:
    """Hold the events' writer locks while their registrations are read and written.

    Every sync of an event (the scheduled sync, a backfill, an overlapping run, a retry) takes
    it, so two writers never interleave: the second waits, then reads the cursor the first
    committed, and older data never replaces newer. Session-level advisory locks on a connection
    of their own (a killed worker's locks are freed by the server), taken in sorted order so
    that two tasks locking overlapping sets cannot deadlock.
    """
    names = sorted({event_lock_name(provider, timing_partner_id, key) for key in event_keys})
    conn = psycopg.connect(dsn or warehouse.dsn_from_airflow(), autocommit=True)
    try:
        for name in names:
            if not conn.execute(TRY_LOCK_EVENT_WRITER, (name,)).fetchone()[0]:
                log.info("%s: another sync is writing this event; waiting for it to finish", name)
                conn.execute(LOCK_EVENT_WRITER, (name,))
        yield
    finally:
        conn.close()  # ends the session, which releases the locks


# ---------------------------------------------------------------------------------------------
# Mapped tasks and the run's verdict


class EventsFailed(RuntimeError):
    """Some events of a mapped task failed (each after its audit row); the others committed."""


def run_batch(
    items: Sequence[T], sync_one: Callable[[T], dict[str, Any]], name_of: Callable[[T], str]
) -> list[dict[str, Any]]:
    """Sync each item; a failing one does not stop the others, and fails the task at the end,
    naming each failed item, so that its retry (or a clear) syncs them again."""
    from airflow.sdk.exceptions import AirflowRescheduleException

    done, failed = [], []
    for item in items:
        try:
            done.append(sync_one(item))
        except AirflowRescheduleException:  # the task gives its slot back before any work: not a failure
            raise
        except Exception as exc:
            message = redact(f"{exc.__class__.__name__}: {exc}")
            log.error("%s failed: %s", name_of(item), message)
            failed.append(f"{name_of(item)}: {message[:300]}")
    if failed:
        raise EventsFailed(f"{len(failed)} of {len(items)} events failed: " + "; ".join(failed))
    return done


def failed_tasks(task_states: Mapping[str, Any] | None, own_task_id: str) -> list[str]:
    """Task instances of the run that failed (map index after the task id), but this one."""
    return sorted(
        name for name, state in (task_states or {}).items()
        if state in FAILED_TASK_STATES and name != own_task_id
    )


def summarize_run(
    provider: str, dag_id: str, run_id: str, task_states: Mapping[str, Any] | None = None, *,
    own_task_id: str = "summary", dsn: str | None = None,
) -> dict[str, Any]:
    """The run's outcome from the audit table (the latest attempt of each unit) and from the
    run's task states; raises RunFailed naming every failure.

    The task states catch what leaves no audit row: a plan that raised, a task killed mid-event,
    a task that never ran because its upstream failed.
    """
    with warehouse.connect(dsn) as conn:
        rows = [dict(zip(AUDIT_COLUMNS, row, strict=True))
                for row in conn.execute(SELECT_RUN_AUDIT, (provider, dag_id, run_id))]
    units = [r for r in rows if r["unit"] != PLAN_UNIT and r["sync_type"] not in ("events", "races", "estimate", "mirror")]
    summary: dict[str, Any] = {
        "events": len(units),
        "full": sum(1 for r in units if r["status"] == "success" and r["sync_type"] in ("full", "backfill")),
        "incremental": sum(1 for r in units if r["status"] == "success" and r["sync_type"] == "incremental"),
        "partial": sum(1 for r in units if r["status"] == "partial"),
    }
    for name in ("inserted", "updated", "removed", "rejected", "calls"):
        summary[name] = sum(r[name] or 0 for r in units)
    summary["plan_calls"] = sum(r["calls"] or 0 for r in rows if r not in units)  # listings, size estimates
    failures = [f"{r['integration_id']} {r['unit']}: {(r['error'] or '')[:300]}" for r in rows if r["status"] == "failed"]
    failures += [f"task {name} failed" for name in failed_tasks(task_states, own_task_id)]
    summary["failed"] = failures
    log.info("%s run %s: %s", provider, run_id, {k: v for k, v in summary.items() if k != "failed"})
    for failure in failures:
        log.error("FAILED %s", failure)
    if failures:
        raise RunFailed(f"{len(failures)} failure(s) in this {provider} run: " + "; ".join(failures[:30]))
    return summary


# ---------------------------------------------------------------------------------------------
# Glue for the DAG files


@contextmanager
def fail_fast() -> Iterator[None]:
    """Bad params and missing configuration fail the task at once, without retries: a retry
    cannot fix them, and the message says what to change."""
    try:
        yield
    except (ParamError, ConfigError) as exc:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(exc)) from exc


def summary_task(provider: str, ti: Any, dag_run: Any) -> dict[str, Any]:
    """The body of a registration DAG's `summary` task (trigger rule all_done): the run's verdict
    from the audit table and from the states of every other task of the run; fails the task (and
    so the run) without retries when anything failed."""
    from airflow.sdk.exceptions import AirflowFailException

    states = ti.get_task_states(dag_id=dag_run.dag_id, run_ids=[dag_run.run_id]).get(dag_run.run_id, {})
    try:
        return summarize_run(provider, dag_run.dag_id, dag_run.run_id, states, own_task_id=ti.task_id)
    except RunFailed as exc:
        raise AirflowFailException(str(exc)) from exc
