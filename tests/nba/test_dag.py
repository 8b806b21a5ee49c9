"""The DAGs through dag.test() against the emulator, with Airflow's google provider."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest

from paceline.nba import ASSET_URI, DAG_ID, QUALITY_DAG_ID
from tests.nba._helpers import box, delete_summary, load, raw_box_count, summary

pytestmark = pytest.mark.timeout(300)

DAGS = Path(__file__).resolve().parents[2] / "dags"


def _dag(filename: str, dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS / filename))
    assert bag.import_errors == {}
    return bag.get_dag(dag_id)


@pytest.fixture(scope="module")
def dag(airflow_db, emulator):
    return _dag("nba_player_game_summary.py", DAG_ID)


def _run_day(dag, day: dt.date):
    """dag.test() for the run that owns ``day``: a manual run at D+1 covers [D, D+1)."""
    run = dag.test(logical_date=dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC))
    assert run.data_interval_start.date() == day
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


def _asset_events(run_id: str) -> list:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == ASSET_URI, AssetEvent.source_run_id == run_id)
        ).all()
        return [(row.source_task_id, dict(row.extra or {})) for row in rows]


def test_dag_shape(airflow_db) -> None:
    from airflow.sdk import CronDataIntervalTimetable

    from paceline.nba.tasks import bq_deferrable

    dag = _dag("nba_player_game_summary.py", DAG_ID)
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.start_date == dt.datetime(2021, 10, 1, tzinfo=dt.UTC)
    assert dag.catchup is False
    assert {"nba", "bigquery"} <= set(dag.tags) and dag.doc_md
    assert set(dag.task_ids) == {"transform_day", "check_day"}
    for task in dag.tasks:
        assert task.owner == "paceline" and task.retries >= 2
    transform, check = dag.get_task("transform_day"), dag.get_task("check_day")
    assert transform.downstream_task_ids == {"check_day"}
    assert [o.uri for o in check.outlets] == [ASSET_URI] and not transform.outlets
    query = transform.configuration["query"]
    assert query["query"] == "player_game_summary.sql"  # rendered from the file, not inlined
    assert query["queryParameters"][0]["parameterType"] == {"type": "DATE"}
    assert "data_interval_start" in query["queryParameters"][0]["parameterValue"]["value"]
    assert transform.deferrable is bq_deferrable()


def test_deferrable_switch(monkeypatch) -> None:
    from paceline.nba.tasks import bq_deferrable

    monkeypatch.delenv("PACELINE_BQ_DEFERRABLE", raising=False)
    assert bq_deferrable() is True  # the default
    for value, expected in (("false", False), ("0", False), ("off", False), ("true", True), ("", True)):
        monkeypatch.setenv("PACELINE_BQ_DEFERRABLE", value)
        assert bq_deferrable() is expected


def test_one_day_end_to_end_rerun_identical(dag, client, small_seed) -> None:
    day = dt.date(2022, 2, 11)
    delete_summary(client, day)
    run, states = _run_day(dag, day)
    assert run.state == "success", states
    rows = summary(client, day)
    assert len(rows) == raw_box_count(client, day) > 0
    events = _asset_events(run.run_id)
    assert len(events) == 1 and events[0][0] == "check_day"
    assert events[0][1]["game_date"] == day.isoformat()
    assert 0.0 < events[0][1]["null_minutes_share"] < 0.6

    rerun, states = _run_day(dag, day)
    assert rerun.state == "success", states
    assert summary(client, day) == rows


def test_day_without_games_succeeds_and_writes_nothing(dag, client, small_seed) -> None:
    day = dt.date(2022, 2, 19)  # All-Star Saturday
    run, states = _run_day(dag, day)
    assert run.state == "success", states
    assert summary(client, day) == []


def test_bad_data_fails_the_gate_at_once_and_emits_no_asset_event(dag, client, fresh_day) -> None:
    assert dag.get_task("check_day").retries == 2
    load(client, [box(fresh_day, pid, "20:00", ftm=1, fta=1, pts=5) for pid in (1, 2)])
    run, states = _run_day(dag, fresh_day)
    # failed, not up_for_retry: bad data stays bad, so the gate does not retry
    assert states == {"transform_day": "success", "check_day": "failed"}
    assert run.state == "failed"
    assert _asset_events(run.run_id) == []


def test_malformed_minutes_fail_the_transform(dag, client, fresh_day) -> None:
    for task in dag.tasks:
        task.retries = 0  # the BigQuery job error is retried like any; a test need not wait for it
    load(client, [box(fresh_day, 1, "20:00"), box(fresh_day, 2, "twenty")])
    run, states = _run_day(dag, fresh_day)
    assert states == {"transform_day": "failed", "check_day": "upstream_failed"}
    assert summary(client, fresh_day) == []
    assert _asset_events(run.run_id) == []


def test_range_quality_dag(client, small_seed, airflow_db, emulator) -> None:
    from tests.nba._helpers import transform

    start, end = dt.date(2022, 2, 14), dt.date(2022, 2, 17)
    day = start
    while day <= end:
        transform(client, day)
        day += dt.timedelta(days=1)
    quality_dag = _dag("nba_quality_check.py", QUALITY_DAG_ID)
    run = quality_dag.test(run_conf={"start": start.isoformat(), "end": end.isoformat()})
    assert run.state == "success"
    for task in quality_dag.tasks:
        task.retries = 0
    run = quality_dag.test(run_conf={"start": start.isoformat(), "end": end.isoformat(),
                                     "band_low": 0.9, "band_high": 1.0})
    assert run.state == "failed"


def test_deferred_trigger_polls_the_emulator(client, airflow_db) -> None:
    """The emulator finishes jobs inside jobs.insert, so the operator never defers there; the
    trigger it would hand to the triggerer still works against it, for good and failed jobs."""
    from airflow.providers.google.cloud.triggers.bigquery import BigQueryInsertJobTrigger

    good = client.query("SELECT 1")
    good.result()
    bad = client.query("SELECT ERROR('boom')")
    with pytest.raises(Exception, match="boom"):
        bad.result()

    async def first_event(job_id: str) -> dict:
        trigger = BigQueryInsertJobTrigger(conn_id="google_cloud_default", job_id=job_id,
                                           project_id=client.project, location="US", poll_interval=0.2)
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")

    assert asyncio.run(asyncio.wait_for(first_event(good.job_id), 30))["status"] == "success"
    failed = asyncio.run(asyncio.wait_for(first_event(bad.job_id), 30))
    assert failed["status"] == "error" and "boom" in failed["message"]
