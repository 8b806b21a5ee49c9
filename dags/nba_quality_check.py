"""nba_quality_check: the player_game_summary quality gate over any range, on demand."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param, task

from paceline.config import GOOGLE_CONN_ID
from paceline.dag_defaults import DEFAULT_ARGS
from paceline.nba import QUALITY_DAG_ID
from paceline.nba.quality import DEFAULT_BAND
from paceline.nba.tasks import run_range_check

with DAG(
    dag_id=QUALITY_DAG_ID,
    description="Quality gate of nba_analytics.player_game_summary over a date range",
    schedule=None,
    start_date=dt.datetime(2021, 10, 1, tzinfo=dt.UTC),
    catchup=False,
    # retries for BigQuery's glitches (a failed rule never retries); the bigquery pool caps jobs
    default_args={**DEFAULT_ARGS, "retries": 2, "pool": "bigquery"},
    params={
        "start": Param("2021-10-01", type="string", format="date", description="first game day"),
        "end": Param("2024-05-01", type="string", format="date", description="last game day"),
        "band_low": Param(DEFAULT_BAND[0], type="number", minimum=0, maximum=1,
                          description="lowest acceptable share of NULL minutes_played"),
        "band_high": Param(DEFAULT_BAND[1], type="number", minimum=0, maximum=1,
                           description="highest acceptable share of NULL minutes_played"),
    },
    tags=["nba", "bigquery", "paceline", "quality"],
    doc_md="""
Runs every rule of the day gate over `[start, end]`, plus the share of NULL `minutes_played`
within `[band_low, band_high]` (35-45% by default, the old system's validation band; outside
it up to 60% passes with a warning), and for 2021-10-01..2024-05-01 110,000-160,000 rows. Run it
after a backfill: `airflow dags trigger nba_quality_check --conf '{"start": "2021-10-01",
"end": "2024-05-01"}'`. A failure names each rule, its figure and up to 10 offending rows.
""",
) as dag:

    @task
    def check_range(params: dict | None = None) -> dict:
        return run_range_check(
            GOOGLE_CONN_ID,
            dt.date.fromisoformat(params["start"]),
            dt.date.fromisoformat(params["end"]),
            (float(params["band_low"]), float(params["band_high"])),
        )

    check_range()
