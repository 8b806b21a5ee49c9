"""haku_backfill: Haku history, small and medium events first, large ones after in a pool of their own."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param, get_current_context, task

from paceline.dag_defaults import DEFAULT_ARGS
from paceline.registrations import engine, haku_backfill, haku_sync

DOC = """
### Haku backfill (manual)

**plan** lists the events of one integration (`integration_id`) or of every enabled one, keeps
those dated within `start_date`..`end_date` (empty: unbounded), and estimates each event's size
from its participant listing alone (pages 1, 2, 4, ... then bisection: a handful of calls, no
detail call). Events of at most `large_threshold` registrations (1,000) are synced first,
smallest first (pool `haku_api`); the large ones follow (pool `haku_backfill_large`, lower
priority), even if some small ones failed. "First" holds per credential: each mapped batch
holds one credential's events, and a large batch starts once its own credential's small
batches have finished (until then it is *up for reschedule* and holds no slot), so a credential
with little small work goes on to its large events while others are still busy. One backfill
task runs at a time per credential (one spends the whole quota): the others of that credential
wait *up for reschedule* until the running one expects to be done, and leave the pool's slots
to other credentials.

The backfill's calls are background calls: a scheduled `haku_sync` of the same credential
takes the quota first while it runs, so live events stay fresh during a long backfill.

Each event is a full sync committed on its own: progress shows event by event, a failed event
fails only its task, and clearing the failed tasks resumes the backfill. `paceline.sync_audit`
keeps `estimated_size` beside `actual_size` for every event (`sync_type = 'backfill'`).
"""

with DAG(
    dag_id="haku_backfill",
    description="Haku history: small events first, large ones deferred",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    default_args=DEFAULT_ARGS,
    params={
        "integration_id": Param(None, type=["null", "string"], description="One integration (null: every enabled one)"),
        "start_date": Param(None, type=["null", "string"], format="date", description="First event date (null: unbounded)"),
        "end_date": Param(None, type=["null", "string"], format="date", description="Last event date (null: unbounded)"),
        "large_threshold": Param(1000, type="integer", minimum=1, description="Registrations above which an event is large"),
    },
    tags=["registrations", "haku", "backfill", "paceline"],
    doc_md=DOC,
) as dag:

    @task
    def plan(params: dict | None = None) -> dict:
        with engine.fail_fast():
            return haku_backfill.plan(params)

    @task
    def small_events(planned: dict) -> list[list[dict]]:
        print(planned["figures"])
        return planned["small"]

    @task
    def large_events(planned: dict) -> list[dict]:
        return planned["large"]

    @task(pool="haku_api", priority_weight=10, weight_rule="absolute", map_index_template="{{ haku_label }}")
    def sync_small(events: list[dict], params: dict | None = None) -> list[dict]:
        get_current_context()["haku_label"] = haku_sync.batch_label(events)
        return haku_backfill.sync_batch(events, params)

    @task(pool="haku_backfill_large", priority_weight=1, weight_rule="absolute", map_index_template="{{ haku_label }}")
    def sync_large(events: list[dict], after_small: list[int], params: dict | None = None, ti=None,  # noqa: ANN001
                   run_id: str | None = None) -> list[dict]:
        get_current_context()["haku_label"] = haku_sync.batch_label(events)
        haku_backfill.wait_for_small_events(after_small, ti, run_id)
        return haku_backfill.sync_batch(events, params)

    @task(trigger_rule="all_done", retries=0)
    def summary(ti=None, dag_run=None) -> dict:  # noqa: ANN001 - Airflow's task instance and run
        return engine.summary_task(haku_sync.PROVIDER, ti, dag_run)

    planned = plan()
    small = sync_small.expand(events=small_events(planned))
    large = sync_large.expand_kwargs(large_events(planned))
    [small, large] >> summary()

if __name__ == "__main__":
    dag.test()
