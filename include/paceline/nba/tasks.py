"""What the NBA DAGs run, kept out of the DAG files so they stay declarative.

Imports are lazy on purpose: every task process parses the DAG file and pays for every import.
BigQuery is reached through ``paceline.providers.bigquery`` (its REST API over the shared HTTP
session), not ``google-cloud-bigquery``, whose pandas and pyarrow helpers cost a task about 0.8 s
of CPU (bench/README.md, NBA section).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)


def bigquery_client(gcp_conn_id: str) -> Any:
    """A :class:`paceline.providers.bigquery.BigQueryClient` for the project of an Airflow
    ``google_cloud_platform`` connection (``BIGQUERY_EMULATOR_HOST`` points it at an emulator)."""
    from paceline.providers.bigquery.hook import BigQueryRestHook

    return BigQueryRestHook(gcp_conn_id).get_client()


@contextlib.contextmanager
def _failing_fast() -> Iterator[None]:
    """Errors a retry cannot fix fail the task at once, saying what to fix: bad data, a table of
    the wrong shape, a bad statement, connection or parameter. Retries stay for BigQuery's transient errors."""
    from airflow.sdk.exceptions import AirflowFailException

    from paceline.nba.build import RawPartitionIncomplete
    from paceline.nba.quality import DataQualityError
    from paceline.nba.setup import SetupError
    from paceline.providers.bigquery import BigQueryError

    try:
        yield
    except (RawPartitionIncomplete, DataQualityError, SetupError, ValueError) as error:
        raise AirflowFailException(str(error)) from error
    except BigQueryError as error:
        if error.permanent:
            raise AirflowFailException(f"{error} (not retried: fix this first, then clear the task)") from error
        raise


def build_and_check_day(
    gcp_conn_id: str, day: dt.date, run_type: Any, *, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Build the run's game day (and, for a scheduled run, the days before it, for corrections),
    then the quality gate over the days built. Returns the gate's figures (the Asset event's extra).

    One task a day, not a build task and a gate task: each task process costs Airflow's start-up
    (bench/README.md), and a day is one unit either way: clearing it rebuilds (idempotent) and
    checks again. The gate's result stays visible: the return value (XCom) and the Asset event
    carry its figures; a failed gate fails the task with a message that starts "player_game_summary
    quality check failed" and names every failing rule.

    Before the day's games are over (``ready_at`` on the next morning, league time) the task goes
    up for reschedule until then, holding no worker and no pool slot. Creates the summary table
    when missing. An incomplete raw partition or a failed gate fails the task at once, without
    retries; the rows already in the summary stay.
    """
    from paceline.nba import build, quality, settings, setup

    config = settings.load()
    ready = build.ready_at(day, config)
    if (now or dt.datetime.now(dt.UTC)) < ready:
        from airflow.sdk.exceptions import AirflowRescheduleException

        log.info("game day %s is built from %s (its games are not over before then)", day, ready.isoformat())
        raise AirflowRescheduleException(ready.astimezone(dt.UTC))
    days = build.days_to_build(day, str(getattr(run_type, "value", run_type)), config)
    with _failing_fast():
        client = bigquery_client(gcp_conn_id)
        created = setup.ensure_summary_table(client)
        if created.table_created:
            log.info("%s", created.describe())
        rows = {each.isoformat(): build.build_day(client, each).rows_affected for each in days}
        results = quality.check_day(client, days[0], end=days[-1], settings=config)
    figures = {"game_date": day.isoformat(), "days": [d.isoformat() for d in days], "rows_written": rows,
               **_figures(results)}
    log.info("quality gate %s for %s: %s", figures["status"], ", ".join(figures["days"]),
             "; ".join(f"{rule} {verdict}" for rule, verdict in figures["checks"].items()))
    for note in figures["notes"]:
        log.warning("quality warning (the day passes with this note): %s", note)
    return figures


def _figures(results: list[Any]) -> dict[str, Any]:
    from paceline.nba import quality

    values = {r.rule: r.value for r in results}
    notes = quality.warnings(results)
    return {
        "status": "warn" if notes else "pass",
        "notes": notes,
        "checks": {r.rule: f"{r.status}: {r.figure}" for r in results},
        "null_minutes_share": values.get(quality.NULL_SHARE_RULE.name),
        "zone_coverage": values.get(quality.ZONE_COVERAGE_RULE.name),
    }


def run_range_check(
    gcp_conn_id: str, start: dt.date, end: dt.date, band: tuple[float, float] | None = None
) -> dict[str, Any]:
    """The range gate; fails the task (no retry) naming every failing rule. Returns the figures."""
    from paceline.nba import quality, settings

    with _failing_fast():
        results = quality.check_range(bigquery_client(gcp_conn_id), start, end, band, settings=settings.load())
    for note in quality.warnings(results):
        log.warning("quality warning (the range passes with this note): %s", note)
    return {"start": start.isoformat(), "end": end.isoformat(), **_figures(results)}
