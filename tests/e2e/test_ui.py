"""The Paceline view in a real browser: Debian's Chromium driven by Playwright, against the stack.

Logs in through Airflow's login form, opens the Paceline entry of the nav bar and checks that
every chart is drawn from what the stack's runs wrote: limiter calls and audit rows of a
RunSignUp sync, racing days loaded by racing_daily, two NBA game days in the BigQuery emulator.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack

NBA_DAYS = ("2022-02-15", "2022-02-16")  # inside the small sandbox's range; not the days other tests backfill


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("no chromium on PATH: run scripts/setup-browser.sh (make test does)")
    return path


def _wait_for_backfill_days(stack: Stack, dag_id: str, days: tuple[str, ...], timeout: float = 420) -> list[dict]:
    deadline = time.monotonic() + timeout
    runs: list[dict] = []
    while time.monotonic() < deadline:
        runs = [
            r
            for r in stack.get(f"/dags/{dag_id}/dagRuns", limit=100)["dag_runs"]
            if r["run_type"] == "backfill" and r["data_interval_start"][:10] in days
        ]
        if len(runs) >= len(days) and all(r["state"] in ("success", "failed") for r in runs):
            return runs
        time.sleep(3)
    raise AssertionError(f"{dag_id} runs of {days} not finished in {timeout}s: {runs}")


def test_paceline_view_shows_every_chart_after_login(stack: Stack, tmp_path: Path) -> None:
    from playwright import sync_api  # requirements-test.txt

    stack.post("/dags/runsignup_sync/dagRuns", {"logical_date": None, "conf": {"due_only": False}})
    stack.post("/dags/racing_daily/dagRuns", {"logical_date": None, "conf": {}})
    created = stack.airflow(
        "backfill", "create", "--dag-id", "nba_player_game_summary",
        "--from-date", NBA_DAYS[0], "--to-date", NBA_DAYS[-1], "--max-active-runs", "2",
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr
    assert stack.wait_for_runs("runsignup_sync", 1, "manual")[0]["state"] == "success"
    assert {r["state"] for r in stack.wait_for_runs("racing_daily", 1, "manual", timeout=600)} == {"success"}
    assert {r["state"] for r in _wait_for_backfill_days(stack, "nba_player_game_summary", NBA_DAYS)} == {"success"}

    password = json.loads((stack.var / "airflow" / "simple_auth_manager_passwords.json").read_text())["admin"]
    shot = Path(os.environ.get("PACELINE_UI_SCREENSHOT") or tmp_path / "paceline.png")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)

            # Without a session the view sends the browser to Airflow's login form.
            page.goto(f"{stack.api}/paceline/")
            page.wait_for_selector("input[name=username]")
            assert "/paceline" not in page.url.split("?")[0]
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", password)
            page.click("button[type=submit]")
            page.wait_for_url(lambda url: "/auth/" not in url)

            # The nav bar's entry shows the view in the UI (an iframe of /paceline/).
            page.goto(f"{stack.api}/")
            page.locator("a[href$='plugin/paceline'], a:has-text('Paceline')").first.click()
            page.wait_for_url("**/plugin/paceline")
            frame = page.frame_locator("iframe")
            frame.locator("svg[data-chart=racing]").wait_for()
            for chart in ("gauge", "quota-hours", "quota-minutes", "freshness", "racing", "nba"):
                assert frame.locator(f"svg[data-chart={chart}]").count() >= 1, chart

            # Figures from the warehouse: quota used by the RunSignUp sync, its audit, the events'
            # freshness, racing days loaded, the two NBA game days.
            used = [int(v) for v in frame.locator("svg[data-chart=gauge]").evaluate_all("s => s.map(e => e.dataset.used || 0)")]
            assert max(used) > 0, used
            hourly = frame.locator("svg[data-chart=quota-hours] rect.bar")
            assert hourly.count() > 0
            assert frame.locator("svg[data-chart=freshness] rect.seg").count() > 0
            days = frame.locator("svg[data-chart=racing] rect.day")
            expected = (dt.datetime.now(dt.UTC).date() - dt.date(2015, 1, 1)).days + 1
            assert abs(days.count() - expected) <= 1, (days.count(), expected)
            assert frame.locator("svg[data-chart=racing] rect.day.loaded").count() >= 1
            assert frame.locator("svg[data-chart=nba] circle.gameday").count() >= len(NBA_DAYS)

            page.goto(f"{stack.api}/paceline/")
            page.wait_for_selector("svg[data-chart=nba]")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
