"""Planning shared by the registration syncs (RunSignUp and Haku).

Which integrations a run covers, which events are due by their proximity tier, how work is cut
into mapped batches that stay well under Airflow's ``max_map_length``, and the connection checks
that must fail a plan before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import psycopg

T = TypeVar("T")

# [core] max_map_length is 1024; stay at half of it so a busy run never trips it.
MAX_MAPPED_ITEMS = 512

SELECT_ENABLED_INTEGRATIONS = """
SELECT integration_id, provider, timing_partner_id, organization, conn_id, calls_per_hour, calls_per_second
FROM registrations.provider_integrations
WHERE enabled AND provider = %s
ORDER BY timing_partner_id, integration_id
"""


@dataclass(frozen=True)
class Integration:
    integration_id: str
    provider: str
    timing_partner_id: int
    organization: str | None
    conn_id: str
    calls_per_hour: int | None
    calls_per_second: float | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form, for XCom."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Integration:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})


def select_integrations(conn: psycopg.Connection, provider: str, timing_partner_id: int | None) -> list[Integration]:
    """The enabled integrations of `provider`, narrowed to one timing partner when one is given.

    A timing partner with no enabled integration is an operator error (a typo in the Trigger
    form): it raises ValueError naming the id and listing the valid ones, rather than running a
    plan that silently does nothing.
    """
    rows = [Integration(*row) for row in conn.execute(SELECT_ENABLED_INTEGRATIONS, (provider,)).fetchall()]
    if timing_partner_id is None:
        return rows
    try:
        wanted = int(timing_partner_id)
    except (TypeError, ValueError):
        raise ValueError(f"timing_partner_id {timing_partner_id!r} is not an integer") from None
    selected = [r for r in rows if r.timing_partner_id == wanted]
    if not selected:
        valid = sorted({r.timing_partner_id for r in rows})
        raise ValueError(
            f"timing_partner_id {wanted} names no enabled {provider} integration; "
            f"valid timing_partner_id values: {', '.join(map(str, valid)) or '(none enabled)'}"
        )
    return selected


# ---------------------------------------------------------------------------------------------
# Proximity tiers


@dataclass(frozen=True)
class ProximityTier:
    """Events within `within_days` of today (None: any distance) are synced every `every`."""

    within_days: int | None
    every: timedelta


DEFAULT_TIERS: tuple[ProximityTier, ...] = (
    ProximityTier(2, timedelta(minutes=15)),
    ProximityTier(14, timedelta(hours=1)),
    ProximityTier(60, timedelta(hours=6)),
    ProximityTier(None, timedelta(days=1)),
)

# The DAG param's default, in the form tiers_from_param reads: [within_days or null, minutes].
DEFAULT_TIERS_PARAM: list[list[int | None]] = [
    [t.within_days, int(t.every.total_seconds() // 60)] for t in DEFAULT_TIERS
]

# A run scheduled every 15 minutes starts a few seconds late or early; without some grace an event
# synced at 10:00:03 would not be due at 10:15:01 and would wait until 10:30.
MAX_GRACE = timedelta(minutes=2)


def _tier(entry: Any) -> ProximityTier:
    if isinstance(entry, ProximityTier):
        return entry
    if isinstance(entry, dict):
        days = entry.get("within_days", entry.get("days"))
        minutes = entry.get("every_minutes", entry.get("minutes"))
    elif isinstance(entry, list | tuple) and len(entry) == 2:
        days, minutes = entry
    else:
        raise ValueError(f"proximity tier {entry!r}: expected [within_days or null, every_minutes]")
    if days is not None and (isinstance(days, bool) or not isinstance(days, int | float) or days < 0):
        raise ValueError(f"proximity tier {entry!r}: within_days must be a non-negative number or null")
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or minutes <= 0:
        raise ValueError(f"proximity tier {entry!r}: every_minutes must be a positive number")
    return ProximityTier(None if days is None else int(days), timedelta(minutes=minutes))


def tiers_from_param(value: Any) -> tuple[ProximityTier, ...]:
    """Tiers from a DAG param: a list of [within_days or null, every_minutes] (or dicts), or None.

    Sorted nearest first; an unbounded tier is added (daily) when the list has none, so that no
    event is ever left without a schedule.
    """
    if value is None or value == []:
        return DEFAULT_TIERS
    if not isinstance(value, list | tuple):
        raise ValueError(f"proximity_tiers {value!r}: expected a list of [within_days or null, every_minutes]")
    tiers = [_tier(entry) for entry in value]
    bounded = sorted((t for t in tiers if t.within_days is not None), key=lambda t: t.within_days or 0)
    unbounded = [t for t in tiers if t.within_days is None]
    if len(unbounded) > 1:
        raise ValueError("proximity_tiers: at most one tier may have within_days null")
    return (*bounded, *(unbounded or [ProximityTier(None, timedelta(days=1))]))


def tier_for(event_date: date, today: date, tiers: Sequence[ProximityTier]) -> ProximityTier:
    """The tier of an event; past events count by their distance too (recent ones still change)."""
    distance = abs((event_date - today).days)
    for tier in tiers:
        if tier.within_days is None or distance <= tier.within_days:
            return tier
    return tiers[-1]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def is_due(
    event_date: date | datetime,
    last_synced_at: datetime | None,
    now: datetime,
    tiers: Sequence[ProximityTier] = DEFAULT_TIERS,
) -> bool:
    """Whether an event's tier asks for a sync now; an event never synced is always due."""
    if last_synced_at is None:
        return True
    if isinstance(event_date, datetime):
        event_date = event_date.date()
    now = _aware(now)
    tier = tier_for(event_date, now.astimezone(UTC).date(), tiers)
    grace = min(MAX_GRACE, tier.every / 10)
    return now - _aware(last_synced_at) >= tier.every - grace


# ---------------------------------------------------------------------------------------------
# Batching and connection checks


def batch(items: Iterable[T], max_items: int = MAX_MAPPED_ITEMS) -> list[list[T]]:
    """Split items into at most `max_items` groups of near-equal size, order kept.

    With fewer items than `max_items` every item is its own group (one mapped task each, so a
    failing event fails alone); with more, neighbours share a group.
    """
    if max_items < 1:
        raise ValueError("max_items must be at least 1")
    items = list(items)
    if not items:
        return []
    groups = min(max_items, len(items))
    size, extra = divmod(len(items), groups)
    result: list[list[T]] = []
    start = 0
    for index in range(groups):
        end = start + size + (1 if index < extra else 0)
        result.append(items[start:end])
        start = end
    return result


def interleave(groups: Iterable[Sequence[T]]) -> list[T]:
    """Round-robin over groups (integrations), so concurrent tasks spend different credentials' quotas."""
    queues = [list(g) for g in groups if g]
    out: list[T] = []
    while queues:
        for queue in list(queues):
            out.append(queue.pop(0))
            if not queue:
                queues.remove(queue)
    return out


def mapped_batches(per_integration: Sequence[Sequence[T]], max_items: int = MAX_MAPPED_ITEMS) -> list[list[T]]:
    """The mapped tasks of a run: units (events, races) of one integration per batch, round-robin
    across integrations, at most `max_items` batches in all; the one batching rule of every
    registration DAG.

    With few units each is its own batch (a failing event fails alone). Beyond `max_items`, each
    integration's share of the batches follows its share of the units (at least one each), order
    kept. One integration per batch lets a task judge its credential's quota before it starts;
    round-robin makes the first tasks the pool admits spend every credential's quota. Only with
    more integrations than `max_items` do batches mix integrations.
    """
    groups = [list(g) for g in per_integration if g]
    total = sum(len(g) for g in groups)
    if not total:
        return []
    if len(groups) > max_items:
        return batch(interleave(groups), max_items)
    budgets = [len(g) if total <= max_items else max(1, len(g) * max_items // total) for g in groups]
    while sum(budgets) > max_items:
        budgets[budgets.index(max(budgets))] -= 1
    return interleave([batch(g, budget) for g, budget in zip(groups, budgets, strict=True)])


def group_count(n_items: int, max_items: int = MAX_MAPPED_ITEMS) -> int:
    return min(max_items, n_items) if n_items else 0


def _field_value(conn: Any, name: str) -> Any:
    """A connection field; "extra.<key>" reads a key of the JSON extra (e.g. Haku's token_url)."""
    if name.startswith("extra."):
        return (getattr(conn, "extra_dejson", None) or {}).get(name.removeprefix("extra."))
    return getattr(conn, name, None)


def validate_connection(hook_cls: type, conn_id: str, required_fields: Sequence[str]) -> Any:
    """Check that Airflow connection `conn_id` exists and has `required_fields`; return it.

    `required_fields` are Connection attributes (host, login, password) or "extra.<key>".
    Raises ValueError naming the connection and what is missing, without the secrets. The hook
    class is used only for its provider name and to read the connection the way it will (so that
    the credentials get masked in the task log as a side effect).
    """
    provider = getattr(hook_cls, "provider", None) or getattr(hook_cls, "hook_name", "provider")
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        hook = hook_cls(conn_id, use_limiter=False)
        conn = hook.connection
    except AirflowNotFoundException:
        raise ValueError(
            f"connection {conn_id!r} (named by registrations.provider_integrations for {provider}) is not defined; "
            f"create it (type http or {getattr(hook_cls, 'conn_type', provider)}) or set AIRFLOW_CONN_{conn_id.upper()}"
        ) from None
    missing = [f for f in required_fields if not _field_value(conn, f)]
    if missing:
        labels = getattr(hook_cls, "field_labels", {}) or {}
        named = ", ".join(f"{f} ({labels[f]})" if f in labels else f for f in missing)
        raise ValueError(
            f"connection {conn_id!r} for {provider} lacks {named}; required fields: {', '.join(required_fields)}"
        )
    return conn
