"""Load a racing day (racecards and results) and the masters into the warehouse.

A day is one unit of work: its racecards and results are fetched first, then every row they
give (races, runners, horses, jockeys, trainers, owners, sires, dams, damsires, pedigree,
bookmakers) is upserted in ONE transaction, with the day's audit row. A day that fails leaves
nothing half-written and can be retried or cleared on its own.

Concurrent days share masters (a horse runs on many days). Rows are upserted sorted by key, table
by table in a fixed order, so two days lock shared rows in the same order and cannot deadlock;
a deadlock or serialization failure all the same retries the whole transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import psycopg

from paceline.audit import AuditRecord, reject
from paceline.db.warehouse import UpsertResult, unit_of_work, upsert
from paceline.providers.racing_api import models
from paceline.providers.racing_api.client import DEFAULT_REGIONS, RacingApiClient
from paceline.providers.racing_api.hook import RacingApiHook

log = logging.getLogger(__name__)

PROVIDER = "racing_api"
SCHEMA = "racing"
# Fixed write order: masters first, then events (see the module docstring on deadlocks).
TABLE_ORDER = (
    "ra_mst_bookmakers",
    "ra_mst_horses",
    "ra_mst_jockeys",
    "ra_mst_trainers",
    "ra_mst_owners",
    "ra_mst_sires",
    "ra_mst_dams",
    "ra_mst_damsires",
    "ra_horse_pedigree",
    "ra_races",
    "ra_runners",
)
KEYS: dict[str, tuple[str, ...]] = {
    **{t: (k,) for t, k in models.MASTER_KEYS.items()},
    "ra_mst_bookmakers": ("bookmaker",),
    "ra_mst_regions": ("region_code",),
    "ra_mst_courses": ("course_id",),
    "ra_horse_pedigree": ("horse_id",),
    "ra_races": ("race_id",),
    "ra_runners": ("race_id", "horse_id"),
}
TRANSACTION_ATTEMPTS = 3


@dataclass
class DayRows:
    """Every row one day gives, per table; each list may mix column sets (see models)."""

    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    rejected: list[tuple[str | None, str, Any]] = field(default_factory=list)  # (key, reason, raw)

    def add(self, table: str, rows: Iterable[dict[str, Any]]) -> None:
        self.tables.setdefault(table, []).extend(rows)


def upsert_grouped(
    conn: psycopg.Connection, table: str, rows: Sequence[dict[str, Any]], now: datetime
) -> UpsertResult:
    """Upsert rows sorted by key, one call per column set (the shared upsert takes one set per call)."""
    key = KEYS[table]
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        # synced_at only beside real attributes: on a key-only table (bookmakers) it would be the
        # one column to update, and every re-run would rewrite every row.
        stamped = {**row, "synced_at": now} if len(row) > len(key) else dict(row)
        groups.setdefault(tuple(stamped), []).append(stamped)
    total = UpsertResult()
    # Widest column set first: the most complete source is written before a partial one.
    for columns in sorted(groups, key=lambda c: (-len(c), c)):
        ordered = sorted(groups[columns], key=lambda r: tuple(str(r[k]) for k in key))
        total += upsert(conn, f"{SCHEMA}.{table}", ordered, key=list(key))
    return total


def _races_of_day(day: date, records: Sequence[Any], kind: str, out: DayRows) -> dict[str, dict[str, Any]]:
    """The records of `day` by race id; each record without an id, or of another date, is set
    aside on its own with its raw body (never merged with others under a missing key)."""
    races: dict[str, dict[str, Any]] = {}
    for record in records:
        race_id = record.get("race_id") if isinstance(record, dict) else None
        if not race_id:
            out.rejected.append((None, f"{kind} without race_id", record))
        elif models.to_date(record.get("date")) != day:
            out.rejected.append((str(race_id), f"{kind} of another date than {day.isoformat()}", record))
        else:
            races[str(race_id)] = record
    return races


def build_day_rows(
    day: date, racecards: Sequence[dict[str, Any]], results: Sequence[dict[str, Any]]
) -> DayRows:
    """Turn one day's racecards and results into rows; records without ids are set aside."""
    out = DayRows()
    cards = _races_of_day(day, racecards, "racecard", out)
    res = _races_of_day(day, results, "result", out)

    races: list[dict[str, Any]] = []
    for race_id in sorted(set(cards) | set(res)):
        card_row = models.race_from_racecard(cards[race_id]) if race_id in cards else None
        result_row = models.race_from_result(res[race_id]) if race_id in res else None
        races.append(models.merge_race(card_row, result_row))
    out.add("ra_races", races)

    runners: dict[tuple[str, str], dict[str, Any]] = {}
    masters: dict[str, dict[str, dict[str, Any]]] = {}
    partial_masters: dict[str, dict[str, dict[str, Any]]] = {}
    pedigrees: dict[str, dict[str, Any]] = {}
    bookmakers: set[str] = set()

    def note_masters(
        found: dict[str, list[dict[str, Any]]], target: dict[str, dict[str, dict[str, Any]]]
    ) -> None:
        for table, rows in found.items():
            key = models.MASTER_KEYS[table]
            for row in rows:
                target.setdefault(table, {})[row[key]] = row

    for race_id, card in cards.items():
        bookmakers |= models.bookmakers(card)
        for runner in card.get("runners") or []:
            if not isinstance(runner, dict) or not runner.get("horse_id"):
                out.rejected.append((race_id, "racecard runner without horse_id", runner))
                continue
            runners[(race_id, runner["horse_id"])] = models.runner_from_racecard(card, runner)
            note_masters(models.masters_from_racecard_runner(runner), masters)
            pedigrees[runner["horse_id"]] = models.pedigree(runner)
    for race_id, result in res.items():
        for runner in result.get("runners") or []:
            if not isinstance(runner, dict) or not runner.get("horse_id"):
                out.rejected.append((race_id, "result runner without horse_id", runner))
                continue
            key = (race_id, runner["horse_id"])
            runners[key] = models.merge_runner(runners.get(key), models.runner_from_result(result, runner))
            note_masters(models.masters_from_result_runner(runner), partial_masters)
            pedigrees.setdefault(runner["horse_id"], models.pedigree(runner))
    out.add("ra_runners", runners.values())
    for table in models.MASTER_KEYS:
        full = masters.get(table, {})
        # A result's partial master row only for ids no racecard of the day described.
        partial = [row for ident, row in partial_masters.get(table, {}).items() if ident not in full]
        out.add(table, [*full.values(), *partial])
    out.add("ra_horse_pedigree", pedigrees.values())
    out.add("ra_mst_bookmakers", ({"bookmaker": b} for b in sorted(bookmakers)))
    return out


def write_day_rows(conn: psycopg.Connection, rows: DayRows, *, unit: str) -> dict[str, UpsertResult]:
    now = datetime.now(UTC)
    counts: dict[str, UpsertResult] = {}
    for table in TABLE_ORDER:
        table_rows = rows.tables.get(table) or []
        if table_rows:
            counts[table] = upsert_grouped(conn, table, table_rows, now)
    for record_key, reason, raw in rows.rejected:
        reject(conn, provider=PROVIDER, reason=reason, raw=raw, unit=unit, record_key=record_key)
    return counts


def _summary(counts: dict[str, UpsertResult]) -> dict[str, dict[str, int]]:
    return {
        t: {"inserted": c.inserted, "updated": c.updated, "unchanged": c.unchanged} for t, c in counts.items()
    }


def make_client(conn_id: str = PROVIDER, client: RacingApiClient | None = None) -> RacingApiClient:
    return client or RacingApiClient(RacingApiHook(conn_id))


def load_day(
    day: date | str,
    *,
    conn_id: str = PROVIDER,
    dsn: str | None = None,
    region_codes: Sequence[str] = DEFAULT_REGIONS,
    racecards: bool = True,
    results: bool = True,
    client: RacingApiClient | None = None,
    sync_type: str = "day",
) -> dict[str, Any]:
    """Fetch one day's racecards (where the API has them) and results, and upsert them at once.

    Returns a JSON-able summary (for XCom): races, runners, calls, throttles and per-table counts.
    """
    day = models.to_date(day) if isinstance(day, str) else day
    if day is None:
        raise ValueError("load_day needs a date (YYYY-MM-DD)")
    started = datetime.now(UTC)
    api = make_client(conn_id, client)
    calls_before, throttles_before = api.calls, api.throttles
    unit = day.isoformat()
    t0 = time.monotonic()
    try:
        cards = api.racecards_pro(day, region_codes) if racecards else []
        res = api.results_for_day(day, region_codes) if results else []
        t1 = time.monotonic()
        rows = build_day_rows(day, cards, res)
        counts: dict[str, UpsertResult] = {}
        for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
            try:
                with unit_of_work(dsn) as conn:
                    counts = write_day_rows(conn, rows, unit=unit)
                    changed = sum(c.inserted + c.updated for c in counts.values())
                    AuditRecord(
                        provider=PROVIDER,
                        unit=unit,
                        sync_type=sync_type,
                        rows_inserted=sum(c.inserted for c in counts.values()),
                        rows_updated=sum(c.updated for c in counts.values()),
                        rows_rejected=len(rows.rejected),
                        calls=api.calls - calls_before,
                        actual_size=len(rows.tables.get("ra_races", [])),
                        started_at=started,
                    ).write(conn)
                break
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                if attempt == TRANSACTION_ATTEMPTS:
                    raise
                log.warning("day %s: transaction conflict, retrying (%d)", unit, attempt)
                time.sleep(0.2 * attempt)
    except Exception as exc:
        _audit_failure(dsn, unit, sync_type, started, api.calls - calls_before, exc)
        raise
    finally:
        if client is None:  # a session this call opened
            api.close()
    summary = {
        "day": unit,
        "races": len(rows.tables.get("ra_races", [])),
        "runners": len(rows.tables.get("ra_runners", [])),
        "racecards": len(cards),
        "results": len(res),
        "calls": api.calls - calls_before,
        "throttles": api.throttles - throttles_before,
        "changed": changed,
        "rejected": len(rows.rejected),
        "fetch_s": round(t1 - t0, 3),
        "write_s": round(time.monotonic() - t1, 3),
        "tables": _summary(counts),
    }
    log.info("racing day %s: %d races, %d runners, %d calls, %d rows changed",
             unit, summary["races"], summary["runners"], summary["calls"], changed)  # fmt: skip
    return summary


def _audit_failure(
    dsn: str | None, unit: str, sync_type: str, started: datetime, calls: int, exc: Exception
) -> None:
    try:
        with unit_of_work(dsn) as conn:
            AuditRecord(provider=PROVIDER, unit=unit, sync_type=sync_type, status="failed", calls=calls,
                        error=f"{exc.__class__.__name__}: {exc}"[:2000], started_at=started).write(conn)  # fmt: skip
    except Exception:  # the original error matters more than a failed audit write
        log.exception("could not write the failure audit of %s", unit)


def load_masters(
    *,
    conn_id: str = PROVIDER,
    dsn: str | None = None,
    region_codes: Sequence[str] = DEFAULT_REGIONS,
    client: RacingApiClient | None = None,
    bookmaker_days: Sequence[date] | None = None,
) -> dict[str, Any]:
    """Regions, courses of `region_codes`, and bookmakers seen in the racecards of `bookmaker_days`.

    There is no bookmakers endpoint: the names come from racecard runners' ``odds[]`` (by default
    today's racecards, one call).
    """
    started = datetime.now(UTC)
    api = make_client(conn_id, client)
    calls_before = api.calls
    try:
        regions = api.regions()
        courses = api.courses(region_codes)
        days = list(bookmaker_days) if bookmaker_days is not None else [api.today]
        names: set[str] = set()
        for day in days:
            for card in api.racecards_pro(day, region_codes):
                names |= models.bookmakers(card)
    finally:
        if client is None:
            api.close()
    now = datetime.now(UTC)
    region_rows = [
        {"region_code": str(r["region_code"]).lower(), "region": models.text(r.get("region")) or ""}
        for r in regions
        if r.get("region_code")
    ]
    course_rows = [
        {
            "course_id": c["id"],
            "course": models.text(c.get("course")) or "",
            "region_code": models.text(c.get("region_code")),
            "region": models.text(c.get("region")),
        }
        for c in courses
        if c.get("id")
    ]
    with unit_of_work(dsn) as conn:
        counts = {
            "ra_mst_regions": upsert_grouped(conn, "ra_mst_regions", region_rows, now),
            "ra_mst_courses": upsert_grouped(conn, "ra_mst_courses", course_rows, now),
            "ra_mst_bookmakers": upsert_grouped(
                conn, "ra_mst_bookmakers", [{"bookmaker": b} for b in sorted(names)], now
            ),
        }
        AuditRecord(
            provider=PROVIDER,
            unit="masters",
            sync_type="masters",
            rows_inserted=sum(c.inserted for c in counts.values()),
            rows_updated=sum(c.updated for c in counts.values()),
            calls=api.calls - calls_before,
            started_at=started,
        ).write(conn)
    return {
        "regions": len(region_rows),
        "courses": len(course_rows),
        "bookmakers": len(names),
        "calls": api.calls - calls_before,
        "tables": _summary(counts),
    }
