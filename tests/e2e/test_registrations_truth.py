"""A green registration run means the work was done: through the real scheduler, a bad param fails
at once without retries, and a misconfigured integration fails the run (naming it) while the
others still sync."""

from __future__ import annotations

import time
import uuid

import psycopg

from tests.e2e.conftest import Stack

BROKEN_PARTNER = 77
ADD_BROKEN_PARTNER = "INSERT INTO registrations.timing_partners VALUES (%s, 'Broken Timing') ON CONFLICT DO NOTHING"
ADD_BROKEN = """
INSERT INTO registrations.provider_integrations (integration_id, provider, timing_partner_id, organization, conn_id)
VALUES ('runsignup-broken', 'runsignup', %s, 'Broken', 'runsignup_missing') ON CONFLICT DO NOTHING
"""
DROP_BROKEN = "DELETE FROM registrations.provider_integrations WHERE integration_id = 'runsignup-broken'"


def trigger(stack: Stack, dag_id: str, conf: dict) -> str:
    run_id = f"manual__truth_{uuid.uuid4().hex[:8]}"
    stack.post(f"/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": conf})
    return run_id


def wait_for_run(stack: Stack, dag_id: str, run_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    run: dict = {}
    while time.monotonic() < deadline:
        run = stack.get(f"/dags/{dag_id}/dagRuns/{run_id}")
        if run["state"] in ("success", "failed"):
            return run
        time.sleep(3)
    raise AssertionError(f"{dag_id} {run_id} not finished in {timeout}s: {run.get('state')}")


def task_instances(stack: Stack, dag_id: str, run_id: str) -> dict[str, list[dict]]:
    tasks: dict[str, list[dict]] = {}
    for ti in stack.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=200)["task_instances"]:
        tasks.setdefault(ti["task_id"], []).append(ti)
    return tasks


def test_a_bad_param_fails_the_run_at_once_without_retries(stack: Stack) -> None:
    run_id = trigger(stack, "runsignup_sync", {"timing_partner_id": 999})
    run = wait_for_run(stack, "runsignup_sync", run_id)
    assert run["state"] == "failed"
    tasks = task_instances(stack, "runsignup_sync", run_id)
    (plan,) = tasks["plan"]
    assert plan["state"] == "failed" and plan["try_number"] == 1  # no retry: a retry cannot fix a param
    assert tasks["summary"][0]["state"] == "failed"


def test_a_misconfigured_integration_fails_the_run_and_the_others_still_sync(stack: Stack) -> None:
    with psycopg.connect(stack.dsn(), autocommit=True) as conn:
        conn.execute(ADD_BROKEN_PARTNER, (BROKEN_PARTNER,))
        conn.execute(ADD_BROKEN, (BROKEN_PARTNER,))
    try:
        run_id = trigger(stack, "runsignup_sync", {"due_only": False})
        run = wait_for_run(stack, "runsignup_sync", run_id)
    finally:
        with psycopg.connect(stack.dsn(), autocommit=True) as conn:
            conn.execute(DROP_BROKEN)
    assert run["state"] == "failed"
    tasks = task_instances(stack, "runsignup_sync", run_id)
    assert tasks["plan"][0]["state"] == "success"
    assert tasks["sync"] and {t["state"] for t in tasks["sync"]} == {"success"}  # the good partners synced
    assert tasks["summary"][0]["state"] == "failed" and tasks["summary"][0]["try_number"] == 1
    with psycopg.connect(stack.dsn()) as conn:
        failures = conn.execute(
            "SELECT integration_id, error FROM paceline.sync_audit WHERE run_id = %s AND status = 'failed'", (run_id,)
        ).fetchall()
        synced = conn.execute(
            "SELECT count(DISTINCT timing_partner_id) FROM paceline.sync_audit "
            "WHERE run_id = %s AND status = 'success' AND unit <> 'plan'", (run_id,)
        ).fetchone()[0]
    assert [f[0] for f in failures] == ["runsignup-broken"]
    assert "connection 'runsignup_missing'" in failures[0][1] and "is not defined" in failures[0][1]
    assert synced >= 1
