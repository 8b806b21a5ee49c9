"""haku_sync: Haku registrations of every enabled integration, each event as often as its date asks."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from paceline.dag_defaults import DEFAULT_ARGS
from paceline.registrations import haku_sync
from paceline.registrations.planning import DEFAULT_TIERS_PARAM

DOC = """
### Haku sync (Haku → `registrations.haku_*`)

Every 15 minutes. **plan** reads the enabled Haku rows of `registrations.provider_integrations`
(narrowed by `timing_partner_id`), checks each row's Airflow connection (login = client id,
password = client secret, extra `token_url`), lists each credential's events, upserts
`registrations.haku_events` and picks the events whose **proximity tier** says they are due
(default: within 2 days every 15 min, within 14 days hourly, within 60 days every 6 h, beyond
daily; param `proximity_tiers` as `[[days or null, minutes], ...]`).

**sync** (mapped, pool `haku_api`, at most 512 items; events share an item beyond that) syncs
each event in one transaction: participants (`is_cancelled` kept), rejected records
(`paceline.rejected_records`), the cursor (`paceline.watermarks`, scope `event:<event_id>`, the
newest `updated_at` listed) and an audit row (`paceline.sync_audit`). Incremental: summaries in
`updated_at desc` order until one is older than the cursor, details only for new or changed
registrations. Full: a new event, a last full sync older than `incremental_days`,
`force_full_sync` (every detail re-read), or a failed incremental. One token per credential is
shared by all tasks (`paceline.api_tokens`); each credential stays under `calls_per_hour`
(default 500) through the shared limiter, across tasks and runs. A task whose first calls do not fit its
credential's quota when it starts (the credential's other tasks are using it, or it is spent) is
*up for reschedule* meanwhile, holding no slot. A `haku_backfill` on the same credentials does
not hold this sync back: its tasks rank below this one for a `haku_api` slot, and its calls let
this sync's calls go first.

**summary** (all_done) reports the run from the audit table and fails the run if an event
failed. Clearing a failed task re-syncs its events from their last committed cursor.
"""

with DAG(
    dag_id="haku_sync",
    description="Haku registrations, every enabled integration, by proximity tier",
    schedule="*/15 * * * *",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params={
        "force_full_sync": Param(False, type="boolean", description="Sync every selected event in full, details included"),
        "incremental_days": Param(7, type="integer", minimum=0,
                                  description="Full sync when an event's last full sync is older than this many days"),
        "timing_partner_id": Param(None, type=["null", "integer"], description="Only this timing partner (null: all)"),
        "future_only": Param(True, type="boolean", description="Only events that have not happened yet"),
        "due_only": Param(True, type="boolean", description="Only events whose proximity tier says they are due"),
        "per_page": Param(25, type="integer", minimum=1, description="Participants asked per page (the server may cap it)"),
        "proximity_tiers": Param(DEFAULT_TIERS_PARAM, type="array",
                                 description="[[within_days or null, every_minutes], ...], nearest first"),
    },
    tags=["registrations", "haku", "paceline"],
    doc_md=DOC,
) as dag:

    @task
    def plan(params: dict | None = None) -> list[list[dict]]:
        return haku_sync.plan(params)

    # above haku_backfill's tasks (10 and 1): a live event takes the next free haku_api slot
    @task(pool="haku_api", priority_weight=100, weight_rule="absolute", map_index_template="{{ haku_label }}")
    def sync(events: list[dict], params: dict | None = None) -> list[dict]:
        get_current_context()["haku_label"] = haku_sync.batch_label(events)
        return haku_sync.sync_batch(events, params)

    @task(trigger_rule="all_done")
    def summary(dag_run=None) -> dict:  # noqa: ANN001 - Airflow's DagRun
        try:
            return haku_sync.summarize(dag_run.dag_id, dag_run.run_id)
        except RuntimeError as exc:
            raise AirflowFailException(str(exc)) from exc

    sync.expand(events=plan()) >> summary()

if __name__ == "__main__":
    dag.test()
