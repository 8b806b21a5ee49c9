"""A second terminal after `make run`: the README's commands, pasted into a shell that has only
what the README tells a user to set (`source var/env`), work against the running stack."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.conftest import Stack

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def readme_line(start: str) -> str:
    """The README's command line that starts with `start` (the test runs what users copy)."""
    lines = [line.strip() for line in (REPO / "README.md").read_text().splitlines() if line.strip().startswith(start)]
    assert lines, f"README.md has no line starting with {start!r}"
    return lines[0]


def terminal(stack: Stack, home: Path, command: str, *, source: bool = True) -> subprocess.CompletedProcess[str]:
    """`command` in a fresh bash: no venv on PATH, no Airflow or Paceline settings, its own HOME;
    with `source`, after the README's one line of set-up (the stack's var/ is a temporary folder)."""
    setup = f"source {stack.var / 'env'} && " if source else ""
    return subprocess.run(
        ["bash", "-c", f"cd {home} && {setup}{command}"],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_readme_backfill_line_runs_from_a_second_terminal(stack: Stack, tmp_path: Path) -> None:
    day = dt.date.today() - dt.timedelta(days=10)  # inside the sandbox's last 60 days of racing
    line = readme_line("airflow backfill create --dag-id racing_daily")
    line = re.sub(r"--from-date \S+", f"--from-date {day}", line)
    line = re.sub(r"--to-date \S+", f"--to-date {day + dt.timedelta(days=1)}", line)

    listed = terminal(stack, tmp_path, "airflow dags list -o json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "racing_daily" in listed.stdout
    created = terminal(stack, tmp_path, line)
    assert created.returncode == 0, created.stdout + created.stderr
    assert "migration" not in (created.stdout + created.stderr).lower()
    assert not (tmp_path / "airflow").exists()  # no stray ~/airflow with SQLite

    deadline = time.monotonic() + 900  # a busy 2-core machine queues task starts
    mine: list[dict] = []
    while time.monotonic() < deadline:
        runs = stack.get("/dags/racing_daily/dagRuns", limit=100)["dag_runs"]
        near = {(day + dt.timedelta(days=n)).isoformat() for n in (-1, 0, 1)}
        mine = [r for r in runs if r["run_type"] == "backfill" and r["logical_date"][:10] in near]
        if mine and all(r["state"] in ("success", "failed") for r in mine):
            break
        time.sleep(3)
    assert mine and {r["state"] for r in mine} == {"success"}, mine

    # the same terminal sees what the backfill did
    status = terminal(stack, tmp_path, "paceline status --json")
    assert status.returncode == 0, status.stderr
    racing = next(i for i in json.loads(status.stdout)["integrations"] if i["integration_id"] == "racing_api")
    assert racing["last_success_at"] is not None
    assert any(r["dag_id"] == "racing_daily" for r in racing["runs"])
    quota = terminal(stack, tmp_path, "paceline quota --json")
    assert quota.returncode == 0, quota.stderr
    credentials = json.loads(quota.stdout)
    assert {c["provider"] for c in credentials} >= {"racing_api", "runsignup", "haku"}
    assert not [c for c in credentials if c["error"]], credentials
    listed = terminal(stack, tmp_path, "paceline integrations list")
    assert listed.returncode == 0 and "sandbox" in listed.stdout, listed.stdout + listed.stderr


def test_paceline_airflow_passes_through_without_sourcing(stack: Stack, tmp_path: Path) -> None:
    # From the checkout, `.venv/bin/paceline airflow ...` needs nothing; here var/ is elsewhere.
    done = terminal(stack, tmp_path, f"PACELINE_VAR_DIR={stack.var} {VENV_BIN / 'paceline'} airflow pools list -o json",
                    source=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "racing_api" in done.stdout
    assert not (tmp_path / "airflow").exists()
