"""racing_masters: regions, courses and bookmakers from The Racing API, weekly."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, task

from paceline.dag_defaults import DEFAULT_ARGS
from paceline.racing import tasks

DOC = """
### Racing masters (The Racing API → `racing.ra_mst_regions`, `ra_mst_courses`, `ra_mst_bookmakers`)

Weekly. Regions (`/v1/courses/regions`), the courses of the `region_codes` param (default gb, ire;
`/v1/courses`, 1 request/second per the spec) and bookmakers. There is no bookmakers endpoint:
names are taken from the `odds[]` of today's Pro racecards (and every `racing_events` /
`racing_daily` day adds the ones its racecards name). Upserts only: nothing is ever deleted.
"""

with DAG(
    dag_id="racing_masters",
    description="Racing API regions, courses and bookmakers",
    schedule="@weekly",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=tasks.racing_params(),
    tags=["racing", "racing_api", "paceline"],
    doc_md=DOC,
) as dag:

    @task(pool="racing_api")
    def load_masters(params: dict | None = None) -> dict:
        return tasks.masters(conn_id=params["conn_id"], region_codes=params["region_codes"])

    load_masters()

if __name__ == "__main__":
    dag.test()
