"""haku_sync: Haku registrations of every enabled integration, each event as often as its date asks."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param, get_current_context, task

from paceline.dag_defaults import DEFAULT_ARGS
from paceline.registrations import engine, haku_sync
from paceline.registrations.planning import DEFAULT_TIERS_PARAM

DOC = """
### Haku sync (Haku → `registrations.haku_*`)

Every 15 minutes. **plan** reads the enabled Haku rows of `registrations.provider_integrations`
(narrowed by `timing_partner_id`), checks each row's Airflow connection (login = client id,
password = client secret, extra `token_url`), lists each credential's events (past ones only when
`future_only` is false), upserts `registrations.haku_events` and picks the events whose
**proximity tier** says they are due (default: within 2 days every 15 min, within 14 days hourly,
within 60 days every 6 h, beyond (or undated) daily), plus every event whose last sync stopped
part-way. A bad param fails at once, without retries; a misconfigured integration is recorded
and skipped while the others sync, and the run ends failed naming it.

**sync** (mapped, pool `haku_api`) syncs each event under its writer lock (shared with
`haku_backfill`), committing page by page: a killed task loses one page at most and the next sync
resumes there. Incremental: summaries in `updated_at desc` order until one is older than the
cursor, details only for new or changed registrations. Full: a new event, a last full sync older
than `incremental_days`, `force_full_sync` (every detail re-read), or a failed incremental. One
event spends at most `event_call_budget` calls per run (default an eighth of the hourly quota),
so a large first sync continues over the next runs while near events keep their cadence. A
detail that keeps failing is kept in `paceline.rejected_records` and the event completes.
A task whose first calls do not fit its credential's quota is *up for reschedule*; a
`haku_backfill` on the same credentials yields its calls to this sync.

**summary** (all_done) fails the run, naming each failure, if anything failed: the plan, an
integration, an event, or a task that died. Clearing a failed task resumes its events.
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
        "event_call_budget": Param(None, type=["null", "integer"], minimum=0,
                                   description="Calls one event may spend per run (null: an eighth of the hourly quota; "
                                               "0: no budget); a larger sync continues in the next runs"),
        "proximity_tiers": Param(DEFAULT_TIERS_PARAM, type="array",
                                 description="[[within_days or null, every_minutes], ...], nearest first"),
    },
    tags=["registrations", "haku", "paceline"],
    doc_md=DOC,
) as dag:

    @task
    def plan(params: dict | None = None) -> list[list[dict]]:
        with engine.fail_fast():
            return haku_sync.plan(params)

    # above haku_backfill's tasks (10 and 1): a live event takes the next free haku_api slot
    @task(pool="haku_api", priority_weight=100, weight_rule="absolute", map_index_template="{{ haku_label }}")
    def sync(events: list[dict], params: dict | None = None) -> list[dict]:
        get_current_context()["haku_label"] = haku_sync.batch_label(events)
        return haku_sync.sync_batch(events, params)

    @task(trigger_rule="all_done", retries=0)
    def summary(ti=None, dag_run=None) -> dict:  # noqa: ANN001 - Airflow's task instance and run
        return engine.summary_task(haku_sync.PROVIDER, ti, dag_run)

    sync.expand(events=plan()) >> summary()

if __name__ == "__main__":
    dag.test()
