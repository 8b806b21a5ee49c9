"""Haku history: estimate every event's size cheaply, sync small and medium events first, large ones after.

The old backfill ran one timing partner in one transaction (nothing visible for hours) and was
stuck behind 5,000-registration events. Here:

* the plan estimates each event's size from the participant listing alone, in O(log pages)
  calls (:meth:`HakuClient.estimate_participants`: probe pages 1, 2, 4, ... then bisect), with no
  detail call, and splits the events at ``large_threshold`` (1,000 by default);
* each event is a full sync committed on its own (``haku_sync.sync_event``), so progress is
  visible event by event and a cleared task redoes only its event;
* the audit row of each event records the estimate beside the actual size;
* "small first" holds per credential, not for the whole run: a credential's large events start
  as soon as *its own* small events are done (:func:`wait_for_small_events`), because quotas are
  per credential and a run-wide barrier would idle every credential with little small work
  until the busiest one finished.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from paceline import audit
from paceline.db.warehouse import connect
from paceline.http.limiter import hour_seconds
from paceline.providers.haku.client import HakuClient
from paceline.providers.haku.models import HakuEvent
from paceline.registrations import haku_sync
from paceline.registrations.engine import ParamError, whole_param
from paceline.registrations.planning import MAX_MAPPED_ITEMS, Integration, mapped_batches

log = logging.getLogger(__name__)

DEFAULT_LARGE_THRESHOLD = 1000
ESTIMATE_PER_PAGE = 100  # asked for; the server may cap it, which the estimate detects
SERVED_PER_PAGE = 25  # what Haku serves at most, whatever per_page asks
SMALL_TASK_ID = "sync_small"  # the DAG's mapped task of small and medium events
SMALL_PHASE_POLL_S = 300  # how often a waiting large batch looks again; the small phase lasts hours
FINISHED_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})


@dataclass(frozen=True)
class BackfillParams:
    integration_id: str | None = None
    start_date: date | None = None
    end_date: date | None = None
    large_threshold: int = DEFAULT_LARGE_THRESHOLD
    per_page: int = haku_sync.DEFAULT_PER_PAGE

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> BackfillParams:
        params = dict(params or {})

        def day(name: str) -> date | None:
            value = params.get(name)
            if value in (None, ""):
                return None
            if isinstance(value, datetime):
                return value.date()
            if isinstance(value, date):
                return value
            try:
                return date.fromisoformat(str(value)[:10])
            except ValueError:
                raise ParamError(f"{name} {value!r} is not a date (YYYY-MM-DD)") from None

        start, end = day("start_date"), day("end_date")
        if start and end and start > end:
            raise ParamError(f"start_date {start} is after end_date {end}")
        return cls(
            integration_id=params.get("integration_id") or None,
            start_date=start,
            end_date=end,
            large_threshold=whole_param(params, "large_threshold", DEFAULT_LARGE_THRESHOLD, 1),
            per_page=whole_param(params, "per_page", haku_sync.DEFAULT_PER_PAGE, 1),
        )

    def covers(self, event: HakuEvent) -> bool:
        if event.event_date is None:
            return self.start_date is None and self.end_date is None
        if self.start_date and event.event_date < self.start_date:
            return False
        return not (self.end_date and event.event_date > self.end_date)


def _estimate(integration: Integration, events: list[HakuEvent]) -> tuple[list[tuple[HakuEvent, int]], int, list[str]]:
    hook = haku_sync.hook_for(integration, background=True)  # a scheduled sync of the credential goes first
    session = hook.get_conn()
    sized, errors = [], []
    try:
        client = HakuClient(session)
        for event in events:
            try:
                sized.append((event, client.estimate_participants(event.event_id, ESTIMATE_PER_PAGE)))
            except Exception as exc:  # an event that cannot be sized is still backfilled, among the large
                log.warning("could not estimate event %s: %s", event.event_id, exc)
                errors.append(f"{event.event_id}: {exc}")
                sized.append((event, -1))
        return sized, session.stats.calls, errors
    finally:
        session.close()


def plan(params: Mapping[str, Any] | None, now: datetime | None = None, dsn: str | None = None) -> dict[str, Any]:
    """{"small": batches, "large": batches, "figures": ...}; small ones smallest first."""
    p = BackfillParams.from_params(params)
    now = now or datetime.now(UTC)
    dsn = dsn or haku_sync.warehouse_dsn()
    integrations = haku_sync.select_and_validate(None, p.integration_id)
    # the whole history, past events included; background calls, like the backfill's own
    found = haku_sync.discover(integrations, p.per_page, show_inactive=True, background=True, dsn=dsn)
    chosen = {iid: (integ, [e for e in events if p.covers(e)]) for iid, (integ, events) in found.items()}
    # each credential sizes its own events; credentials run side by side (their quotas are separate)
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(chosen)))) as pool:
        futures = {iid: pool.submit(_estimate, integ, events) for iid, (integ, events) in chosen.items()}
        estimates = {iid: f.result() for iid, f in futures.items()}
    small_groups: list[list[dict[str, Any]]] = []
    large_groups: list[list[dict[str, Any]]] = []
    with connect(dsn, autocommit=True) as conn:
        for iid, (sized, calls, errors) in estimates.items():
            integration = chosen[iid][0]
            small = sorted(
                (haku_sync.work_item(integration, e, estimated_size=n, size="small") for e, n in sized if 0 <= n <= p.large_threshold),
                key=lambda item: item["estimated_size"],
            )
            large = sorted(
                (haku_sync.work_item(integration, e, estimated_size=n, size="large") for e, n in sized if n < 0 or n > p.large_threshold),
                key=lambda item: item["estimated_size"],
            )
            small_groups.append(small)
            large_groups.append(large)
            audit.AuditRecord(
                haku_sync.PROVIDER, "estimate", "estimate", iid, integration.timing_partner_id,
                calls=calls, estimated_size=sum(max(n, 0) for _, n in sized),
                # an event that cannot be sized is still backfilled (among the large): a note, not a failure
                error=("could not size: " + "; ".join(errors))[:2000] if errors else None,
            ).write(conn)
            log.info("%s: %d small/medium and %d large events, sized in %d calls", iid, len(small), len(large), calls)
    small_batches = mapped_batches(small_groups, MAX_MAPPED_ITEMS)
    large_batches = mapped_batches(large_groups, MAX_MAPPED_ITEMS)
    small_tasks = small_tasks_by_integration(small_batches)
    small_items = [i for b in small_batches for i in b]
    large_items = [i for b in large_batches for i in b]
    return {
        "small": small_batches,
        # each large batch names the sync_small map indexes of its own credential, which it waits for
        "large": [{"events": b, "after_small": small_tasks.get(integration_of(b), [])} for b in large_batches],
        "figures": {
            "small_events": len(small_items),
            "large_events": len(large_items),
            "estimated_registrations": sum(max(i["estimated_size"], 0) for i in small_items + large_items),
            "estimate_calls": sum(calls for _, calls, _ in estimates.values()),
        },
    }


def integration_of(events: Sequence[Mapping[str, Any]]) -> str:
    return events[0]["integration"]["integration_id"]


def small_tasks_by_integration(small_batches: Sequence[Sequence[Mapping[str, Any]]]) -> dict[str, list[int]]:
    """integration_id -> the map indexes of sync_small that hold its events."""
    tasks: dict[str, list[int]] = {}
    for index, events in enumerate(small_batches):
        tasks.setdefault(integration_of(events), []).append(index)
    return tasks


def unfinished_small_tasks(states: Mapping[str, str | None], after_small: Sequence[int]) -> list[int]:
    """The map indexes among `after_small` whose sync_small task has not finished (states as
    returned by the Task SDK's get_task_states: ``{"sync_small_<i>": state}``)."""
    return [i for i in after_small if states.get(f"{SMALL_TASK_ID}_{i}") not in FINISHED_STATES]


def wait_for_small_events(after_small: Sequence[int], ti: Any, run_id: str, poll_s: float | None = None) -> None:
    """Return once this credential's small-event tasks have all finished (succeeded or not);
    until then reschedule the task, which frees its worker and pool slot while it waits.
    `poll_s` defaults to SMALL_PHASE_POLL_S, scaled with the quota hour like the limiter."""
    if not after_small:
        return
    poll_s = poll_s if poll_s is not None else SMALL_PHASE_POLL_S * hour_seconds() / 3600.0
    from airflow.sdk.exceptions import AirflowRescheduleException

    states = ti.get_task_states(dag_id=ti.dag_id, task_ids=[SMALL_TASK_ID], run_ids=[run_id]).get(run_id, {})
    pending = unfinished_small_tasks(states, after_small)
    if pending:
        log.info("waiting for this credential's %d unfinished small-event task(s) (sync_small %s); "
                 "looking again in %.3gs", len(pending), pending[:10], poll_s)
        raise AirflowRescheduleException(datetime.now(UTC) + timedelta(seconds=poll_s))


def sync_item(item: Mapping[str, Any], params: Mapping[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """A full sync of one event, audited as "backfill" with its estimated size. Its calls are
    background calls: a scheduled haku_sync of the same credential goes first."""
    size = item.get("estimated_size")
    kwargs.setdefault("hook", haku_sync.hook_for(Integration.from_dict(item["integration"]), background=True))
    return haku_sync.sync_event(
        item, params, sync_type="backfill", full=True, estimated_size=size if size is None or size >= 0 else None, **kwargs
    )


def expected_calls(item: Mapping[str, Any]) -> int | None:
    """The calls a full sync of an event takes: a detail call per registration and the listing's
    pages (Haku serves at most SERVED_PER_PAGE a page). None when its size is not known."""
    size = item.get("estimated_size")
    if size is None or size < 0:
        return None
    return size + math.ceil(size / SERVED_PER_PAGE) + 1


def sync_batch(
    items: list[Mapping[str, Any]], params: Mapping[str, Any] | None = None, **kwargs: Any
) -> list[dict[str, Any]]:
    """Backfill each event of a mapped batch; one failing event fails the task after the others ran.

    Every batch, small or large, runs alone on its credential (it holds the credential's lane)
    and says when it expects to be done. One task spends a credential's whole quota; a second
    would only take turns with the first while holding a pool slot another credential's work
    could use (measured: credentials ran 2-3 small tasks at once while others sat idle for up to
    0.7 quota-hours). A task turned away comes back when the holder expects to be done."""
    return haku_sync.sync_batch(items, params, sync=sync_item, background=True, alone=True,
                                calls_of=expected_calls, **kwargs)
