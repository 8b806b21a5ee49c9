"""Every DAG file imports cleanly and carries what an operator needs in the UI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.contract import CONTRACT_DAG_IDS

DAGS_DIR = Path(__file__).resolve().parents[1] / "dags"


@pytest.fixture(scope="module")
def dagbag(warehouse_dsn):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_every_dag_file_imports_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert dagbag.dags, "no DAG found"


def test_the_contract_dags_exist(dagbag) -> None:
    missing = CONTRACT_DAG_IDS - set(dagbag.dag_ids)
    assert not missing, f"DAGs of the contract missing: {sorted(missing)}"


def test_every_dag_has_tags_owner_docs_and_retries(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md and len(dag.doc_md.strip()) > 40, f"{dag_id} has no doc_md"
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id} has no owner"
            if task.task_id == "summary":  # a verdict on what the run did: a retry cannot change it
                assert task.retries == 0, f"{dag_id}.summary retries: a failed verdict must fail the run at once"
                continue
            assert task.retries >= 2, f"{dag_id}.{task.task_id} retries {task.retries} < 2"


def test_dag_files_are_short_and_declarative() -> None:
    for path in DAGS_DIR.glob("*.py"):
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        assert len(lines) < 200, f"{path.name} has {len(lines)} lines: move the work to include/paceline"


def test_haku_backfill_large_batches_wait_per_credential_not_behind_a_barrier(dagbag) -> None:
    from paceline.registrations import haku_backfill

    dag = dagbag.dags["haku_backfill"]
    small, large = dag.get_task(haku_backfill.SMALL_TASK_ID), dag.get_task("sync_large")
    assert (small.pool, large.pool) == ("haku_api", "haku_backfill_large")
    assert large.priority_weight < small.priority_weight
    # a scheduled haku_sync takes the next free haku_api slot before any backfill task
    scheduled = dagbag.dags["haku_sync"].get_task("sync")
    assert scheduled.pool == small.pool and scheduled.priority_weight > small.priority_weight
    assert scheduled.weight_rule == small.weight_rule == large.weight_rule  # absolute: the weights as given
    # no run-wide edge from the small events to the large ones: each large batch waits for its own
    # credential's small batches (haku_backfill.wait_for_small_events)
    assert small.task_id not in large.upstream_task_ids
    assert {small.task_id, large.task_id} <= dag.get_task("summary").upstream_task_ids
