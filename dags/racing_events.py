"""racing_events: one calendar month per run; racecards and results of every day, then coverage."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, CronDataIntervalTimetable, TriggerRule, get_current_context, task

from paceline.dag_defaults import DEFAULT_ARGS
from paceline.racing import tasks

DOC = """
### Racing events (The Racing API → `racing.ra_*`)

One run = one calendar month (its data interval). `list_days` gives the month's days;
`load_day` is mapped over them (pool `racing_api`, shown as the date): each day fetches its
results (`start_date=end_date=day`, `skip` paging until `total`) and, from 2023-01-23 on, its Pro
racecards, then upserts races, runners, horses, jockeys, trainers, owners, sires, dams, damsires,
pedigree and bookmakers in **one transaction** with an audit row. A failed day is retried, and can
be cleared alone; the month's other days stay.

All calls share one limiter: 2 requests/second per credential across every mapped task and run;
429s and the API's empty-200 answer are waited out, not taken as data. A page that stays empty
before `total` is reached fails the day (nothing of it is committed; Airflow retries it). Records
without a `race_id` go to `paceline.rejected_records` with their raw body.

`list_days` first makes one call with the connection: a wrong or revoked key (HTTP 401/403) fails
the run there, and in any task it fails at once without retries, naming the connection to fix.

`coverage` runs even when days failed. It reports, per day, races, runners, abandoned races and
races without runners, and flags days with no meetings (expected every day but 24–25 December).
It **fails** when a day's last load did not succeed or a non-abandoned race has no runners (re-running helps);
a loaded day the API says had no racing is only a warning.

History: `airflow backfill create --dag-id racing_events --from-date 2015-01-01 --to-date <today>
--max-active-runs 3` (UI: the DAG's *Trigger* → *Backfill*). Coverage of any range without a run:
`python -m paceline.racing.coverage --start … --end …` (or `paceline.racing.coverage.coverage(dsn, start, end)`).
"""

with DAG(
    dag_id="racing_events",
    description="Racing API racecards and results, one calendar month per run",
    schedule=CronDataIntervalTimetable("0 0 1 * *", timezone="UTC"),
    start_date=dt.datetime(2015, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=3,
    default_args=DEFAULT_ARGS,
    params=tasks.racing_params(),
    tags=["racing", "racing_api", "paceline"],
    doc_md=DOC,
) as dag:

    @task
    def list_days(
        data_interval_start: dt.datetime | None = None,
        data_interval_end: dt.datetime | None = None,
        params: dict | None = None,
    ) -> list[str]:
        tasks.check_connection(params["conn_id"])  # a refused key fails the run here, not in every day
        return tasks.interval_days(data_interval_start, data_interval_end)

    @task(pool="racing_api", map_index_template="{{ racing_day }}")
    def load_day(day: str, params: dict | None = None) -> dict:
        get_current_context()["racing_day"] = day  # the map index shows the date
        return tasks.events_day(day, conn_id=params["conn_id"], region_codes=params["region_codes"])

    @task(trigger_rule=TriggerRule.ALL_DONE, retries=2, retry_delay=dt.timedelta(seconds=30))
    def coverage(
        data_interval_start: dt.datetime | None = None, data_interval_end: dt.datetime | None = None
    ) -> list[dict]:
        return tasks.coverage_check(data_interval_start, data_interval_end)

    load_day.expand(day=list_days()) >> coverage()

if __name__ == "__main__":
    dag.test()
