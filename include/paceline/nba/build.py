"""Build game days of player_game_summary: when a day is ready, which days a run builds, and
the guarded per-day MERGE.

A day is rebuilt by one MERGE (``sql/player_game_summary.sql``), atomic and idempotent. Before
it, ``sql/checks/raw_guard.sql`` makes sure the raw partitions can stand in for what the summary
holds: a game the summary has but the raw box score lacks (an empty or half-reloaded partition),
or a game with field-goal attempts but no play-by-play shots, stops the day with
:class:`RawPartitionIncomplete` and the summary keeps its rows.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from paceline.nba import BOX_TABLE, TRANSFORM_SQL, sql_text
from paceline.nba.settings import LEAGUE_TZ, NbaSettings

if TYPE_CHECKING:
    from paceline.providers.bigquery import BigQueryClient

log = logging.getLogger(__name__)

GUARD_SQL = "checks/raw_guard.sql"
MAX_GAMES_SHOWN = 10


class RawPartitionIncomplete(RuntimeError):
    """The day's raw partitions lack games the summary has (or their shots); nothing was written."""


def ready_at(day: dt.date, settings: NbaSettings) -> dt.datetime:
    """When game day ``day`` may be built: ``settings.ready_at`` on the next day, league time."""
    return dt.datetime.combine(day + dt.timedelta(days=1), settings.ready_time(), tzinfo=LEAGUE_TZ)


def days_to_build(day: dt.date, run_type: str, settings: NbaSettings) -> list[dt.date]:
    """The run's own day, preceded by ``reread_days`` earlier days when the run is scheduled.

    Backfill and manual runs build their day only: a backfill builds every day anyway, and a
    manual run is aimed at one day.
    """
    extra = settings.reread_days if run_type == "scheduled" else 0
    return [day - dt.timedelta(days=back) for back in range(extra, -1, -1)]


def guard(client: BigQueryClient, day: dt.date) -> list[dict[str, Any]]:
    """The problem games of ``day`` (empty: safe to rebuild). A missing raw table raises."""
    from paceline.providers.bigquery import NotFound

    try:
        return client.query(sql_text(GUARD_SQL), {"game_date": day}).rows
    except NotFound as exc:
        raise RawPartitionIncomplete(
            f"cannot build {day}: a table is missing ({exc}). The raw tables "
            f"({BOX_TABLE}, nba_raw.pbp_actions) are loaded upstream; the summary table is created by "
            "`python -m paceline nba setup`."
        ) from exc


def _describe(day: dt.date, problems: list[dict[str, Any]]) -> str:
    missing = [p for p in problems if p["problem"] == "missing_from_box_player"]
    no_shots = [p for p in problems if p["problem"] == "no_pbp_shots"]
    parts = [f"refusing to rebuild {day}: the raw partitions are incomplete, so the summary keeps its rows."]
    if missing:
        rows = sum(p["n"] for p in missing)
        shown = ", ".join(p["game_id"] for p in missing[:MAX_GAMES_SHOWN])
        parts.append(
            f"{len(missing)} game(s) with {rows} summary row(s) are not in {BOX_TABLE} for {day} "
            f"(first {min(len(missing), MAX_GAMES_SHOWN)}: {shown})."
        )
    if no_shots:
        shown = ", ".join(f"{p['game_id']} ({p['n']} FGA)" for p in no_shots[:MAX_GAMES_SHOWN])
        parts.append(f"{len(no_shots)} game(s) have field-goal attempts but no play-by-play shots: {shown}.")
    parts.append(
        "Reload the day's raw partitions, then clear this task. If a game really was removed, "
        "delete its rows: DELETE FROM nba_analytics.player_game_summary "
        "WHERE game_date = '<day>' AND game_id = '<game_id>'."
    )
    return " ".join(parts)


@dataclass(frozen=True)
class DayBuild:
    day: dt.date
    rows_affected: int


def build_day(client: BigQueryClient, day: dt.date) -> DayBuild:
    """Guard, then the day's MERGE. Raises :class:`RawPartitionIncomplete` before writing anything."""
    problems = guard(client, day)
    if problems:
        raise RawPartitionIncomplete(_describe(day, problems))
    job = client.query(sql_text(TRANSFORM_SQL), {"game_date": day})
    affected = int(job.num_dml_affected_rows or 0)
    log.info("built %s: %d summary row(s) written (job %s)", day, affected, job.job_id)
    return DayBuild(day, affected)
