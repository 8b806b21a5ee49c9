"""nba_player_game_summary: one NBA game day per run, rebuilt on BigQuery, behind a quality gate."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, task

from paceline.config import GOOGLE_CONN_ID
from paceline.dag_defaults import DEFAULT_ARGS
from paceline.nba import ASSET_NAME, ASSET_URI, DAG_ID, POOL
from paceline.nba.tasks import build_and_check_day as build_and_check

PLAYER_GAME_SUMMARY = Asset(name=ASSET_NAME, uri=ASSET_URI)

DOC = """
### NBA player_game_summary

One run = one game day = one partition of `nba_analytics.player_game_summary`: the run's data
interval is that day (its UTC midnight to the next, so `airflow backfill create --from-date
--to-date` takes game days as they are written), and the day reaches BigQuery as the `game_date`
query parameter. One task, in the `bigquery` pool:

**build_and_check_day** waits (up for reschedule, holding no slot) until 06:00 America/New_York
on the next morning, when the day's last games are over; creates the summary table if it is
missing; then per day one guarded MERGE (`paceline/nba/sql/player_game_summary.sql`) reading
that day's raw partitions only. A scheduled run also rebuilds the 2 days before its own, for late
games and stat corrections. If the raw box score lacks a game the summary has (an empty or
half-reloaded partition), or a game has attempts but no play-by-play shots, the task fails at
once and the summary keeps its rows. Then the old system's quality gate over the days built
(NULL-minutes share 35-45% passes, up to 60% passes with a warning, above fails; shot-zone
coverage at least 85%; points identity; completeness). Only when it passes is the Asset
`bigquery://paceline/nba_analytics/player_game_summary` updated, with the gate's figures and any
warning notes in the event's extra (and in the task's return value). A failed gate fails the task
at once with "player_game_summary quality check failed", naming each rule; clearing the task
rebuilds the day (idempotent) and checks it again.

Settings (thresholds, the ready time, the re-read days): Airflow Variable `paceline_nba`, see
docs/nba.md. History: `airflow backfill create --dag-id nba_player_game_summary --from-date
2021-10-01 --to-date 2024-05-01 --max-active-runs 15`, then `nba_quality_check` over the range.
"""

with DAG(
    dag_id=DAG_ID,
    description="One NBA game day per run: player_game_summary on BigQuery, behind a quality gate",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=dt.datetime(2021, 10, 1, tzinfo=dt.UTC),
    catchup=False,
    default_args={**DEFAULT_ARGS, "retries": 2, "pool": POOL},
    tags=["nba", "bigquery", "paceline"],
    doc_md=DOC,
) as dag:

    @task(outlets=[PLAYER_GAME_SUMMARY])
    def build_and_check_day(data_interval_start: dt.datetime | None = None, dag_run=None,
                            outlet_events=None) -> dict:
        """Build the game day (and the re-read days) once its games are over, then the quality gate."""
        figures = build_and_check(GOOGLE_CONN_ID, data_interval_start.date(), dag_run.run_type)
        outlet_events[PLAYER_GAME_SUMMARY].extra = figures
        return figures

    build_and_check_day()

if __name__ == "__main__":
    dag.test()
