"""`python -m paceline sandbox up|status|down` as an operator runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg
import pytest
import requests


def _cli(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paceline", "sandbox", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_up_status_down(tmp_path, warehouse_dsn: str) -> None:
    env = {**os.environ, "PACELINE_VAR_DIR": str(tmp_path), "PACELINE_SANDBOX_WRITE_CONNECTIONS": "0"}
    assert _cli(env, "status").returncode == 1
    up = _cli(env, "up", "--scale", "small")
    assert up.returncode == 0, up.stderr
    try:
        status = _cli(env, "status", "--json")
        assert status.returncode == 0
        state = json.loads(status.stdout)
        for name in ("runsignup", "haku", "haku_token_url", "racing_api", "bigquery"):
            assert state[name] and state[name].startswith("http://127.0.0.1:"), name
        assert {i["provider"] for i in state["integrations"]} == {"runsignup", "haku"}
        assert all(i["login"] and i["password"] for i in state["integrations"])
        # each server answers as its provider does
        assert requests.get(state["runsignup"] + "/rest/races", params={"format": "json"}, timeout=10).ok
        token = requests.post(state["haku_token_url"], timeout=10)
        assert token.status_code in (400, 401)  # no client credentials: refused, as Cognito does
        assert requests.get(state["racing_api"] + "/v1/courses/regions", timeout=10).status_code == 401
        assert requests.get(state["bigquery"] + "/healthz", timeout=10).ok
        # a second `up` reports the running sandbox instead of starting another
        again = json.loads(_cli(env, "up", "--json").stdout)
        assert again["pid"] == state["pid"]
        # integrations registered in the warehouse
        with psycopg.connect(warehouse_dsn) as conn:
            registered = {r[0] for r in conn.execute("SELECT integration_id FROM registrations.provider_integrations")}
        assert {i["integration_id"] for i in state["integrations"]} <= registered
    finally:
        down = _cli(env, "down")
    assert down.returncode == 0 and "stopped" in down.stdout
    assert _cli(env, "status").returncode == 1
    with pytest.raises(requests.ConnectionError):
        requests.get(state["runsignup"] + "/rest/races", timeout=5)
