"""The Paceline view in a real browser: Debian's Chromium driven by Playwright, against the stack.

Logs in through Airflow's login form, opens the Paceline entry of the nav bar and checks that
every chart is drawn from what the stack's runs wrote: limiter calls and audit rows of the
scheduled registration syncs, racing days loaded by the scheduled racing runs, an NBA game day
backfilled into the BigQuery emulator.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from pathlib import Path

import psycopg
import pytest

from tests.e2e.conftest import Stack

NBA_DAYS = ("2022-02-15",)  # inside the small sandbox's range; not a day other tests backfill
# What the stack's own scheduled runs write soon after start-up (the DAGs are unpaused then):
# registration syncs make limiter calls, racing_daily and racing_events load days.
DATA_READY = """
SELECT (SELECT count(*) FROM paceline.sync_audit WHERE provider IN ('runsignup', 'haku') AND calls > 0),
       (SELECT count(*) FROM paceline.sync_audit
        WHERE provider = 'racing_api' AND status = 'success' AND unit ~ '^\\d{4}-\\d{2}-\\d{2}$')
"""


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("no chromium on PATH: run scripts/apt-install.sh chromium chromium (make test does)")
    return path


def _wait_for_data(stack: Stack, dag_id: str, days: tuple[str, ...], timeout: float = 1200) -> None:
    """Until the scheduled runs have written quota and racing rows and the backfill of `days` ended.

    Waits on what the page needs rather than on given runs: on a busy machine a manual run can queue
    behind the scheduled one for many minutes."""
    deadline = time.monotonic() + timeout
    counts: tuple[int, int] = (0, 0)
    runs: list[dict] = []
    while time.monotonic() < deadline:
        with psycopg.connect(stack.dsn()) as conn:
            counts = conn.execute(DATA_READY).fetchone()
        runs = [
            r
            for r in stack.get(f"/dags/{dag_id}/dagRuns", limit=100)["dag_runs"]
            if r["run_type"] == "backfill" and r["data_interval_start"][:10] in days
        ]
        runs_done = len(runs) >= len(days) and all(r["state"] in ("success", "failed") for r in runs)
        if all(counts) and runs_done:
            assert {r["state"] for r in runs} == {"success"}, runs
            return
        time.sleep(5)
    raise AssertionError(f"no data after {timeout}s: audit rows with calls, racing days {counts}; {dag_id} runs {runs}")


@pytest.mark.timeout(1800)  # the stack's start, the runs' data and the browser on a busy 2-core machine
def test_paceline_view_shows_every_chart_after_login(stack: Stack, tmp_path: Path) -> None:
    from playwright import sync_api  # requirements-dev.txt

    created = stack.airflow(
        "backfill", "create", "--dag-id", "nba_player_game_summary",
        "--from-date", NBA_DAYS[0], "--to-date", NBA_DAYS[-1], "--max-active-runs", "1",
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr
    _wait_for_data(stack, "nba_player_game_summary", NBA_DAYS)

    password = json.loads((stack.var / "airflow" / "simple_auth_manager_passwords.json").read_text())["admin"]
    shot = Path(os.environ.get("PACELINE_UI_SCREENSHOT") or tmp_path / "paceline.png")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(180_000)  # the page queries 12 years of racing days
        try:

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
            nav = page.locator("a[href*='plugin/paceline']").or_(page.get_by_role("link", name="Paceline"))
            nav.or_(page.get_by_role("button", name="Paceline")).first.click()
            page.wait_for_url("**/plugin/paceline")
            frame = page.frame_locator("iframe[src*='paceline']")
            frame.locator("svg[data-chart=racing]").wait_for()
            for chart in ("gauge", "quota-hours", "quota-minutes", "freshness", "racing", "nba"):
                assert frame.locator(f"svg[data-chart={chart}]").count() >= 1, chart

            # Figures from the warehouse: quota used by the registration syncs, their audit, the
            # events' freshness, racing days loaded; the NBA game day from BigQuery.
            used = [int(v) for v in frame.locator("svg[data-chart=gauge]").evaluate_all("s => s.map(e => e.dataset.used || 0)")]
            assert max(used) > 0, used
            hourly = frame.locator("svg[data-chart=quota-hours] rect.bar")
            assert hourly.count() > 0
            assert frame.locator("svg[data-chart=freshness] rect.seg").count() > 0
            days = frame.locator("svg[data-chart=racing] rect.day")
            expected = (dt.datetime.now(dt.UTC).date() - dt.date(2015, 1, 1)).days + 1
            assert abs(days.count() - expected) <= 1, (days.count(), expected)
            assert frame.locator("svg[data-chart=racing] rect.day:not(.not_loaded)").count() >= 1
            assert frame.locator("svg[data-chart=nba] circle.gameday").count() >= len(NBA_DAYS)

            page.goto(f"{stack.api}/paceline/")
            page.wait_for_selector("svg[data-chart=nba]")
            page.screenshot(path=str(shot), full_page=True)
        except Exception:
            page.screenshot(path=str(shot.with_name("paceline-failure.png")), full_page=True)
            raise
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
