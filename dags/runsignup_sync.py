"""runsignup_sync: RunSignUp registrations of every enabled integration, each event as often as its date asks."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from paceline.dag_defaults import DEFAULT_ARGS
from paceline.registrations import runsignup_sync as rsu
from paceline.registrations.planning import DEFAULT_TIERS_PARAM

DOC = """
### RunSignUp sync (RunSignUp → `registrations.runsignup_*`)

Every 15 minutes. **plan** reads the enabled RunSignUp rows of `registrations.provider_integrations`
(narrowed by `timing_partner_id`), checks each row's Airflow connection (login = api_key,
password = api_secret), lists each key's races and events, upserts `registrations.runsignup_events`
and picks the events whose **proximity tier** says they are due (default: within 2 days every
15 min, within 14 days hourly, within 60 days every 6 h, beyond daily; param `proximity_tiers`
as `[[days or null, minutes], ...]`).

**sync** (mapped, pool `runsignup_api`, at most 512 items: events share an item beyond that)
syncs each event in one transaction: participants, removals (`removed_reason`), rejected
records (`paceline.rejected_records`), the cursor (`paceline.watermarks`, scope
`event:<race_id>:<event_id>`) and an audit row (`paceline.sync_audit`). Incremental by
`modified_after_timestamp` (inclusive) and `/removed-participants`; full for a new event, a
cursor older than `incremental_days`, `force_full_sync`, or when an incremental call fails in a
way a full read avoids. Each credential stays under `calls_per_hour` (default 1,000) through the
shared limiter, across tasks and runs. A task whose first calls do not fit its
credential's quota when it starts (the credential's other tasks are using it, or it is spent) is
*up for reschedule* meanwhile, holding no slot.

A failing event fails only its mapped task; **summary** (all_done) reports every event of the
run from the audit table and fails the run if any event failed. Clearing a failed task re-syncs
its events from their last committed cursor.

Params: `force_full_sync`, `incremental_days`, `timing_partner_id` (null: all), `future_only`,
`due_only` (false: every event of the selected integrations, incrementally where possible).
"""

with DAG(
    dag_id="runsignup_sync",
    description="RunSignUp registrations, every enabled integration, by proximity tier",
    schedule="*/15 * * * *",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params={
        "force_full_sync": Param(False, type="boolean", description="Sync every selected event in full"),
        "incremental_days": Param(7, type="integer", minimum=0,
                                  description="Full sync when an event's cursor is older than this many days"),
        "timing_partner_id": Param(None, type=["null", "integer"], description="Only this timing partner (null: all)"),
        "future_only": Param(True, type="boolean", description="Only events that have not happened yet"),
        "due_only": Param(True, type="boolean", description="Only events whose proximity tier says they are due"),
        "proximity_tiers": Param(DEFAULT_TIERS_PARAM, type="array",
                                 description="[[within_days or null, every_minutes], ...], nearest first"),
    },
    tags=["registrations", "runsignup", "paceline"],
    doc_md=DOC,
) as dag:

    @task
    def plan(params: dict | None = None) -> list[dict]:
        return rsu.plan(params)

    @task(pool="runsignup_api", map_index_template="{{ rsu_label }}")
    def sync(item: dict, params: dict | None = None) -> dict:
        get_current_context()["rsu_label"] = item["label"]
        return rsu.sync_batch(item, params)

    @task(trigger_rule="all_done")
    def summary(run_id: str | None = None) -> dict:
        totals = rsu.summarize_run(run_id)
        print(f"RunSignUp sync: {totals['events']} events ({totals['full']} full, {totals['incremental']} incremental), "
              f"{totals['inserted']} inserted, {totals['updated']} updated, {totals['removed']} removed, "
              f"{totals['rejected']} rejected, {totals['calls']} calls")
        for failed in totals["failed"]:
            print(f"FAILED {failed['integration_id']} event {failed['unit']}: {failed['error']}")
        if totals["failed"]:
            raise AirflowFailException(f"{len(totals['failed'])} event(s) failed; see the log above and paceline.sync_audit")
        return {k: v for k, v in totals.items() if k != "failed"}

    synced = sync.expand(item=plan())
    synced >> summary()

if __name__ == "__main__":
    dag.test()
