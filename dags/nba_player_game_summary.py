"""nba_player_game_summary: one NBA game day per run, rebuilt on BigQuery, behind a quality gate."""

from __future__ import annotations

import datetime as dt

from airflow.providers.google.cloud.operators.bigquery import BigQueryInsertJobOperator
from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, task

from paceline.config import GOOGLE_CONN_ID
from paceline.dag_defaults import DEFAULT_ARGS
from paceline.nba import ASSET_NAME, ASSET_URI, DAG_ID, SQL_DIR
from paceline.nba.tasks import bq_deferrable, run_day_check, transform_configuration

PLAYER_GAME_SUMMARY = Asset(name=ASSET_NAME, uri=ASSET_URI)

DOC = """
### NBA player_game_summary

One run = one game day = one partition of `nba_analytics.player_game_summary`: the run's data
interval is that day (UTC), and the day reaches BigQuery as the `game_date` query parameter.

1. **transform_day**: one MERGE (`paceline/nba/sql/player_game_summary.sql`) that reads the day's
   partitions of `nba_raw.box_player` and `nba_raw.pbp_actions` only. Idempotent: re-running a day
   leaves identical rows; a day without games writes nothing. Malformed minutes fail it with the
   offending rows.
2. **check_day**: identities (zones sum to fga, three = fg3a, points), completeness and the
   minutes parser's failure mode. Only when it passes is the Asset
   `bigquery://paceline/nba_analytics/player_game_summary` updated, so consumers never see a bad day.

History: `airflow backfill create --dag-id nba_player_game_summary --from-date 2021-10-01
--to-date 2024-05-01 --max-active-runs 15`, then `nba_quality_check` over the same range.
The BigQuery job is deferrable (the wait runs in the triggerer, not a worker slot);
`PACELINE_BQ_DEFERRABLE=false` in the Airflow processes' environment turns that off.
"""

with DAG(
    dag_id=DAG_ID,
    description="One NBA game day per run: player_game_summary on BigQuery, behind a quality gate",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=dt.datetime(2021, 10, 1, tzinfo=dt.UTC),
    catchup=False,
    default_args={**DEFAULT_ARGS, "retries": 2},
    template_searchpath=[str(SQL_DIR)],
    tags=["nba", "bigquery", "paceline"],
    doc_md=DOC,
) as dag:
    transform_day = BigQueryInsertJobOperator(
        task_id="transform_day",
        gcp_conn_id=GOOGLE_CONN_ID,
        configuration=transform_configuration(),
        deferrable=bq_deferrable(),
    )

    @task(outlets=[PLAYER_GAME_SUMMARY])
    def check_day(data_interval_start: dt.datetime | None = None, outlet_events=None) -> dict:
        """Quality gate of the day; the Asset event carries its figures."""
        figures = run_day_check(GOOGLE_CONN_ID, data_interval_start.date())
        outlet_events[PLAYER_GAME_SUMMARY].extra = figures
        return figures

    transform_day >> check_day()

if __name__ == "__main__":
    dag.test()
