"""runsignup_sync: RunSignUp registrations of every enabled integration, each event as often as its date asks."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param, get_current_context, task

from paceline.dag_defaults import DEFAULT_ARGS
from paceline.registrations import engine
from paceline.registrations import runsignup_sync as rsu
from paceline.registrations.planning import DEFAULT_TIERS_PARAM

DOC = """
### RunSignUp sync (RunSignUp → `registrations.runsignup_*`)

Every 15 minutes. **plan** reads the enabled RunSignUp rows of `registrations.provider_integrations`
(narrowed by `timing_partner_id`), checks each row's Airflow connection (login = api_key,
password = api_secret), lists each key's races and events, upserts `registrations.runsignup_events`
and picks the events whose **proximity tier** says they are due (default: within 2 days every
15 min, within 14 days hourly, within 60 days every 6 h, beyond (or undated) daily; param
`proximity_tiers` as `[[days or null, minutes], ...]`). A bad param fails the plan at once, without
retries. A misconfigured integration (missing connection or field) is recorded and skipped: the
others still sync, and the run ends failed naming it. A malformed race or event in a listing is
kept in `paceline.rejected_records` and skipped.

**sync** (mapped, pool `runsignup_api`, at most 512 items: events share an item beyond that)
syncs each event in one transaction, holding the event's writer lock: participants, removals
(`removed_reason`; a registration a full read no longer lists becomes `not_listed`), rejected
records, the cursor (`paceline.watermarks`) and an audit row (`paceline.sync_audit`).
Incremental by `modified_after_timestamp` and `/removed-participants`; a full re-read for a new
event, when its last full sync is older than `incremental_days`, on `force_full_sync`, or when an
incremental call fails in a way a full read avoids. Each credential stays under `calls_per_hour`
(default 1,000) through the shared limiter; a task whose first calls do not fit is *up for
reschedule*, holding no slot.

**summary** (all_done) reports the run from the audit table and fails the run, naming each
failure, if anything failed: the plan, an integration, an event, or a task that died. Clearing a
failed task re-syncs its events from their last committed cursor.
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
                                  description="Full re-read when an event's last full sync is older than this many days"),
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
        with engine.fail_fast():
            return rsu.plan(params)

    @task(pool="runsignup_api", map_index_template="{{ rsu_label }}")
    def sync(item: dict, params: dict | None = None) -> dict:
        get_current_context()["rsu_label"] = item["label"]
        return rsu.sync_batch(item, params)

    @task(trigger_rule="all_done", retries=0)
    def summary(ti=None, dag_run=None) -> dict:  # noqa: ANN001 - Airflow's task instance and run
        return engine.summary_task(rsu.PROVIDER, ti, dag_run)

    sync.expand(item=plan()) >> summary()

if __name__ == "__main__":
    dag.test()
