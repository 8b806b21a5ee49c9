"""Haku history: estimate every event's size cheaply, sync small and medium events first, large ones after.

The old backfill ran one timing partner in one transaction (nothing visible for hours) and was
stuck behind 5,000-registration events. Here:

* the plan estimates each event's size from the participant listing alone, in O(log pages)
  calls (:meth:`HakuClient.estimate_participants`: probe pages 1, 2, 4, ... then bisect), with no
  detail call, and splits the events at ``large_threshold`` (1,000 by default);
* each event is a full sync committed on its own (``haku_sync.sync_event``), so progress is
  visible event by event and a cleared task redoes only its event;
* the audit row of each event records the estimate beside the actual size.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from paceline import audit
from paceline.db.warehouse import connect
from paceline.providers.haku.client import HakuClient
from paceline.providers.haku.models import HakuEvent
from paceline.registrations import haku_sync
from paceline.registrations.planning import MAX_MAPPED_ITEMS, Integration, batch

log = logging.getLogger(__name__)

DEFAULT_LARGE_THRESHOLD = 1000
ESTIMATE_PER_PAGE = 100  # asked for; the server may cap it, which the estimate detects


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
                raise ValueError(f"{name} {value!r} is not a date (YYYY-MM-DD)") from None

        start, end = day("start_date"), day("end_date")
        if start and end and start > end:
            raise ValueError(f"start_date {start} is after end_date {end}")
        threshold = int(params.get("large_threshold") or DEFAULT_LARGE_THRESHOLD)
        if threshold < 1:
            raise ValueError("large_threshold must be at least 1")
        return cls(
            integration_id=params.get("integration_id") or None,
            start_date=start,
            end_date=end,
            large_threshold=threshold,
            per_page=int(params.get("per_page") or haku_sync.DEFAULT_PER_PAGE),
        )

    def covers(self, event: HakuEvent) -> bool:
        if event.event_date is None:
            return self.start_date is None and self.end_date is None
        if self.start_date and event.event_date < self.start_date:
            return False
        return not (self.end_date and event.event_date > self.end_date)


def _estimate(integration: Integration, events: list[HakuEvent]) -> tuple[list[tuple[HakuEvent, int]], int, list[str]]:
    hook = haku_sync.hook_for(integration)
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
    with connect(dsn, autocommit=True) as conn:
        integrations = haku_sync.select_and_validate(conn, {}, p.integration_id)
        found = haku_sync.discover(conn, integrations, p.per_page)
    chosen = {iid: (integ, [e for e in events if p.covers(e)]) for iid, (integ, events) in found.items()}
    # each credential sizes its own events; credentials run side by side (their quotas are separate)
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(chosen)))) as pool:
        futures = {iid: pool.submit(_estimate, integ, events) for iid, (integ, events) in chosen.items()}
        estimates = {iid: f.result() for iid, f in futures.items()}
    small_groups, large_groups = [], []
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
                status="failed" if errors else "success", error="; ".join(errors)[:2000] or None,
            ).write(conn)
            log.info("%s: %d small/medium and %d large events, sized in %d calls", iid, len(small), len(large), calls)
    small_items = haku_sync.interleave(small_groups)
    large_items = haku_sync.interleave(large_groups)
    return {
        "small": batch(small_items, MAX_MAPPED_ITEMS),
        "large": batch(large_items, MAX_MAPPED_ITEMS),
        "figures": {
            "small_events": len(small_items),
            "large_events": len(large_items),
            "estimated_registrations": sum(max(i["estimated_size"], 0) for i in small_items + large_items),
            "estimate_calls": sum(calls for _, calls, _ in estimates.values()),
        },
    }


def sync_item(item: Mapping[str, Any], params: Mapping[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """A full sync of one event, audited as "backfill" with its estimated size."""
    size = item.get("estimated_size")
    return haku_sync.sync_event(
        item, params, sync_type="backfill", full=True, estimated_size=size if size is None or size >= 0 else None, **kwargs
    )


def sync_batch(items: list[Mapping[str, Any]], params: Mapping[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """Backfill each event of a mapped batch; one failing event fails the task after the others ran."""
    return haku_sync.sync_batch(items, params, sync=sync_item, **kwargs)
