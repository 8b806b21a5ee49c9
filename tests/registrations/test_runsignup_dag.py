"""dags/runsignup_sync.py parses and declares what the contract and the operators expect."""

from __future__ import annotations

from pathlib import Path

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "runsignup_sync.py"


def test_runsignup_sync_dag_imports(warehouse_dsn) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    dag = bag.dags["runsignup_sync"]
    assert dag.max_active_runs == 1 and not dag.catchup
    assert "*/15 * * * *" in str(dag.timetable)
    assert set(dag.params.keys()) >= {"force_full_sync", "incremental_days", "timing_partner_id", "future_only",
                                      "due_only", "proximity_tiers"}
    assert dag.params["incremental_days"] == 7 and dag.params["timing_partner_id"] is None
    tasks = {t.task_id: t for t in dag.tasks}
    assert tasks["sync"].pool == "runsignup_api"
    assert tasks["sync"].map_index_template
    assert str(tasks["summary"].trigger_rule) in ("all_done", "TriggerRule.ALL_DONE")
    assert all(t.retries >= 2 for t in dag.tasks if t.task_id != "summary") and tasks["summary"].retries == 0
    assert all(t.owner == "paceline" for t in dag.tasks)
