"""The racing DAG files import cleanly and declare what the contract and the design say."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dagbag(warehouse_dsn):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_DIR))
    errors = {k: v for k, v in bag.import_errors.items() if "racing_" in k}
    assert errors == {}
    return bag


def test_racing_dags_exist_with_tags_and_docs(dagbag):
    for dag_id in ("racing_masters", "racing_events", "racing_daily"):
        dag = dagbag.dags.get(dag_id)
        assert dag is not None, dag_id
        assert "racing" in dag.tags and len(dag.doc_md) > 100
        assert dag.params["region_codes"] == ["gb", "ire"]
        for task in dag.tasks:
            assert task.owner == "paceline" and task.retries >= 2


def test_racing_events_runs_one_calendar_month(dagbag):
    from airflow.sdk import CronDataIntervalTimetable

    dag = dagbag.dags["racing_events"]
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.start_date == datetime(2015, 1, 1, tzinfo=UTC)
    assert dag.catchup is False and dag.max_active_runs == 3
    assert (dag.timetable.expression, str(dag.timetable.timezone)) == ("0 0 1 * *", "UTC")
    from airflow.timetables.interval import CronDataIntervalTimetable as CoreTimetable

    core = CoreTimetable(dag.timetable.expression, timezone=dag.timetable.timezone)
    interval = core.infer_manual_data_interval(run_after=datetime(2024, 2, 10, tzinfo=UTC))
    assert (interval.start, interval.end) == (
        datetime(2024, 1, 1, tzinfo=UTC),
        datetime(2024, 2, 1, tzinfo=UTC),
    )
    load = dag.get_task("load_day")
    assert load.pool == "racing_api"
    assert dag.get_task("coverage").trigger_rule == "all_done"
    assert {t.task_id for t in dag.tasks} == {"list_days", "load_day", "coverage"}


def test_interval_days_is_the_whole_month():
    from paceline.racing.tasks import interval_days

    days = interval_days(datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC))
    assert len(days) == 29 and days[0] == "2024-02-01" and days[-1] == "2024-02-29"
