"""The DAGs through dag.test() against the emulator, with Airflow's google provider."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from paceline.nba import ASSET_URI, DAG_ID, QUALITY_DAG_ID
from tests.nba._helpers import DROP_SUMMARY, box, delete_summary, load, raw_box_count, summary

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


def _failure(capfd) -> str:
    """What the failed task logged (dag.test() runs it in this process)."""
    out, err = capfd.readouterr()
    return out + err


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

    dag = _dag("nba_player_game_summary.py", DAG_ID)
    # UTC midnights: `backfill create --from-date/--to-date` (read as UTC) take game days as written
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == "0 0 * * *" and str(dag.timetable.timezone) == "UTC"
    assert dag.start_date == dt.datetime(2021, 10, 1, tzinfo=dt.UTC)
    assert dag.catchup is False
    assert {"nba", "bigquery"} <= set(dag.tags) and dag.doc_md
    # one task a day: Airflow's start-up is paid once per day (bench/README.md), the gate inside it
    assert set(dag.task_ids) == {"build_and_check_day"}
    pools = json.loads((DAGS.parent / "config" / "pools.json").read_text())
    for task in dag.tasks:
        assert task.owner == "paceline" and task.retries >= 2
        assert task.pool == "bigquery" and "bigquery" in pools
    assert [o.uri for o in dag.get_task("build_and_check_day").outlets] == [ASSET_URI]
    quality_dag = _dag("nba_quality_check.py", QUALITY_DAG_ID)
    assert {task.pool for task in quality_dag.tasks} == {"bigquery"}


def test_dag_file_does_not_import_the_bigquery_operator() -> None:
    """Every task process parses the DAG file: it must not pay for the provider's operator.

    (The Asset's bigquery:// URI loads the provider's URI handlers, gcs hook included: Airflow's
    cost for any DAG with that outlet, which the floor DAG of bench/nba_floor.py pays too.)
    """
    heavy = ("airflow.providers.google.cloud.operators.bigquery", "airflow.providers.google.cloud.hooks.bigquery",
             "google.cloud.bigquery")
    code = (
        "import sys; sys.path.insert(0, 'include'); import runpy; "
        "runpy.run_path('dags/nba_player_game_summary.py', run_name='parse'); "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=DAGS.parent, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_tasks_reach_bigquery_without_the_client_library(emulator) -> None:
    """A task's whole BigQuery path (client from the connection, set-up, build, gate) loads neither
    google-cloud-bigquery nor pandas/pyarrow: about 0.8 s of CPU per task process (bench/README.md)."""
    heavy = ("google.cloud.bigquery", "pandas", "pyarrow", "airflow.providers.google.common.hooks.base_google")
    code = (
        "import sys, datetime as dt; sys.path.insert(0, 'include'); "
        "from paceline.nba import build, quality, setup, tasks; "
        "client = tasks.bigquery_client('google_cloud_default'); setup.ensure_summary_table(client); "
        "build.build_day(client, dt.date(2022, 2, 12)); quality.check_day(client, dt.date(2022, 2, 12)); "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=DAGS.parent, capture_output=True, text=True,
                         timeout=120, check=True, env={**os.environ, **emulator.env()}).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_first_run_creates_the_missing_table(dag, client, small_seed) -> None:
    day = dt.date(2022, 2, 10)
    client.query(DROP_SUMMARY)
    run, states = _run_day(dag, day)
    assert run.state == "success", states
    assert len(summary(client, day)) == raw_box_count(client, day) > 0


def test_one_day_end_to_end_rerun_identical(dag, client, small_seed) -> None:
    day = dt.date(2022, 2, 11)
    delete_summary(client, day)
    run, states = _run_day(dag, day)
    assert run.state == "success", states
    rows = summary(client, day)
    assert len(rows) == raw_box_count(client, day) > 0
    events = _asset_events(run.run_id)
    assert len(events) == 1 and events[0][0] == "build_and_check_day"
    extra = events[0][1]
    assert extra["game_date"] == day.isoformat() and extra["days"] == [day.isoformat()]
    assert 0.0 < extra["null_minutes_share"] < 0.6 and extra["zone_coverage"] == 1.0
    assert extra["status"] in ("pass", "warn") and set(extra["checks"]) >= {"null_minutes_share", "zone_coverage"}

    rerun, states = _run_day(dag, day)
    assert rerun.state == "success", states
    assert summary(client, day) == rows


def test_day_without_games_succeeds_and_writes_nothing(dag, client, small_seed) -> None:
    day = dt.date(2022, 2, 19)  # All-Star Saturday
    run, states = _run_day(dag, day)
    assert run.state == "success", states
    assert summary(client, day) == []


def test_bad_data_fails_the_gate_at_once_and_emits_no_asset_event(dag, client, fresh_day, capfd) -> None:
    assert dag.get_task("build_and_check_day").retries == 2
    load(client, [box(fresh_day, pid, "20:00", ftm=1, fta=1, pts=5) for pid in (1, 2)])
    run, states = _run_day(dag, fresh_day)
    # failed, not up_for_retry: bad data stays bad, so the gate does not retry
    assert states == {"build_and_check_day": "failed"}
    assert "player_game_summary quality check failed" in _failure(capfd)
    assert run.state == "failed"
    assert _asset_events(run.run_id) == []


def test_malformed_minutes_fail_the_transform(dag, client, fresh_day, capfd) -> None:
    load(client, [box(fresh_day, 1, "20:00"), box(fresh_day, 2, "twenty")])
    run, states = _run_day(dag, fresh_day)
    # failed, not up_for_retry: the statement's ERROR() (invalidQuery) is not something a retry fixes
    assert states == {"build_and_check_day": "failed"}
    logged = _failure(capfd)
    assert "minutes_format" in logged and "not retried" in logged
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
    # outside the pass band but under the ceiling: passes with a note
    run = quality_dag.test(run_conf={"start": start.isoformat(), "end": end.isoformat(),
                                     "band_low": 0.5, "band_high": 0.55})
    assert run.state == "success"
    (ti,) = run.get_task_instances()
    figures = ti.xcom_pull(task_ids="check_range")
    assert figures["status"] == "warn" and figures["notes"][0].startswith("null_minutes_share")
    for task in quality_dag.tasks:
        task.retries = 0
    run = quality_dag.test(run_conf={"start": "1999-01-01", "end": "1999-01-31"})
    assert run.state == "failed"


def test_warn_band_day_passes_with_the_note_in_the_asset_event(dag, client, fresh_day) -> None:
    # 5 of 10 players without minutes: 50%, above the 35-45% band and under the 60% ceiling
    load(client, [box(fresh_day, pid, None) for pid in range(1, 6)]
         + [box(fresh_day, pid, "30:00") for pid in range(6, 11)])
    run, states = _run_day(dag, fresh_day)
    assert run.state == "success", states
    ((source, extra),) = _asset_events(run.run_id)
    assert source == "build_and_check_day" and extra["status"] == "warn"
    assert extra["rows_written"] == {fresh_day.isoformat(): 10}
    (note,) = extra["notes"]
    assert note.startswith("null_minutes_share: NULL minutes_played share 50.0% (5 of 10 rows)")


def test_warning_is_logged(client, fresh_day, emulator, caplog) -> None:
    from paceline.nba.tasks import build_and_check_day

    load(client, [box(fresh_day, pid, None) for pid in range(1, 6)]
         + [box(fresh_day, pid, "30:00") for pid in range(6, 11)])
    with caplog.at_level("WARNING", logger="paceline.nba.tasks"):
        figures = build_and_check_day("google_cloud_default", fresh_day, "manual")
    assert figures["status"] == "warn"
    assert any("quality warning (the day passes with this note): null_minutes_share" in r.getMessage()
               for r in caplog.records)


def test_emptied_raw_partition_fails_the_run_and_keeps_the_rows(dag, client, fresh_day) -> None:
    load(client, [box(fresh_day, pid, "20:00") for pid in (1, 2)])
    run, states = _run_day(dag, fresh_day)
    assert run.state == "success", states
    before = summary(client, fresh_day)
    client.query("DELETE FROM nba_raw.box_player WHERE game_date = @game_date", {"game_date": fresh_day})
    run, states = _run_day(dag, fresh_day)
    # failed at once, not up_for_retry: a retry cannot fill the partition
    assert states == {"build_and_check_day": "failed"}
    assert summary(client, fresh_day) == before
    assert _asset_events(run.run_id) == []
