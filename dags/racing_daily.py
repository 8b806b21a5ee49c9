"""racing_daily: yesterday's results (and the two days before again), today's and tomorrow's racecards."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, CronDataIntervalTimetable, get_current_context, task

from paceline.dag_defaults import DEFAULT_ARGS
from paceline.racing import tasks

DOC = """
### Racing daily (The Racing API → `racing.ra_*`)

Runs each morning for the day that just ended (data interval = yesterday, UTC). Units, each one
transaction: the results of the last **3** days (results keep changing for a while after a race:
non-runners, official ratings, tote), and the racecards of the run's calendar day and the next
(racecards are published up to a week ahead). Everything is an upsert on the contract keys, so
overlapping runs and re-runs leave one row per race and runner.

Pool `racing_api`; the shared limiter keeps the credential at 2 requests/second together with
`racing_events` backfills. `plan` makes one call first: a wrong or revoked key (HTTP 401/403)
fails the run at once, without retries, naming the connection.
"""

with DAG(
    dag_id="racing_daily",
    description="Racing API: last 3 days of results, today's and tomorrow's racecards",
    schedule=CronDataIntervalTimetable("30 6 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=tasks.racing_params(),
    tags=["racing", "racing_api", "paceline"],
    doc_md=DOC,
) as dag:

    @task
    def plan(data_interval_end: dt.datetime | None = None, params: dict | None = None) -> list[dict]:
        tasks.check_connection(params["conn_id"])  # a refused key fails the run here, once
        # The run happens on the interval's end day: "today" for racecards, results before it.
        return tasks.daily_plan(data_interval_end)

    @task(pool="racing_api", map_index_template="{{ racing_unit }}")
    def load(unit: dict, params: dict | None = None) -> dict:
        get_current_context()["racing_unit"] = (
            f"{unit['day']} {'results' if unit['results'] else 'racecards'}"
        )
        return tasks.daily_unit(unit, conn_id=params["conn_id"], region_codes=params["region_codes"])

    load.expand(unit=plan())

if __name__ == "__main__":
    dag.test()
