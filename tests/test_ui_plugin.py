"""The Paceline view's queries and SVG charts on the embedded PostgreSQL warehouse.

Calls go through the real shared limiter (its bucket tables are what the quota chart reads);
BigQuery is pointed at a closed port to show that the page still renders without it (the
emulator path runs in tests/e2e/test_ui.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Iterator

import psycopg
import pytest

from paceline.db.embedded import free_port

NOW = dt.datetime.now(dt.UTC)
TODAY = NOW.date()
CONNECTIONS = {
    "AIRFLOW_CONN_UI_RSU": {"conn_type": "http", "login": "ui-rsu-key", "password": "s1"},
    "AIRFLOW_CONN_UI_HAKU": {"conn_type": "http", "login": "ui-haku-client", "password": "s2"},
}
RESET = """
DELETE FROM registrations.provider_integrations WHERE integration_id LIKE 'ui-%';
DELETE FROM registrations.runsignup_events WHERE integration_id LIKE 'ui-%';
DELETE FROM registrations.haku_events WHERE integration_id LIKE 'ui-%';
DELETE FROM racing.ra_runners WHERE race_id LIKE 'rac_ui_%';
DELETE FROM racing.ra_races WHERE race_id LIKE 'rac_ui_%';
"""


@pytest.fixture
def seeded(warehouse: str) -> Iterator[str]:
    """Two integrations (RunSignUp, Haku) with events, syncs, audit rows; racing days; limiter calls."""
    for name, value in CONNECTIONS.items():
        os.environ[name] = json.dumps(value)
    os.environ.pop("AIRFLOW_CONN_RACING_API", None)  # the racing card must say its connection is missing
    with psycopg.connect(warehouse, autocommit=True) as conn:
        conn.execute(RESET)
        conn.execute("INSERT INTO registrations.timing_partners VALUES (901, 'UI one'), (902, 'UI two') ON CONFLICT DO NOTHING")
        conn.execute(
            "INSERT INTO registrations.provider_integrations (integration_id, provider, timing_partner_id, conn_id, calls_per_hour)"
            " VALUES ('ui-rsu', 'runsignup', 901, 'ui_rsu', 600), ('ui-haku', 'haku', 902, 'ui_haku', 500)"
        )
        # RunSignUp: an event today synced 5 min ago (fresh: 15 min target), one in 30 days synced
        # 2 days ago (stale: 6 h target). Haku: an event never synced.
        conn.execute(
            "INSERT INTO registrations.runsignup_events (timing_partner_id, race_id, event_id, integration_id, start_time)"
            " VALUES (901, 1, 11, 'ui-rsu', %s), (901, 1, 12, 'ui-rsu', %s)",
            (dt.datetime.combine(TODAY, dt.time(9)), dt.datetime.combine(TODAY + dt.timedelta(days=30), dt.time(9))),
        )
        conn.execute(
            "INSERT INTO paceline.watermarks (integration_id, scope, cursor_value, updated_at)"
            " VALUES ('ui-rsu', 'event:1:11', 'c', %s), ('ui-rsu', 'event:1:12', 'c', %s)",
            (NOW - dt.timedelta(minutes=5), NOW - dt.timedelta(days=2)),
        )
        conn.execute(
            "INSERT INTO registrations.haku_events (timing_partner_id, event_id, integration_id, event_date)"
            " VALUES (902, 'ui-e1', 'ui-haku', %s)",
            (TODAY,),
        )
        # Audit: 120 scheduled calls over the last two hours, 40 background calls an hour ago.
        audit = (
            "INSERT INTO paceline.sync_audit (provider, integration_id, unit, sync_type, status, calls, dag_id,"
            " started_at, finished_at) VALUES (%s, %s, 'u', %s, %s, %s, %s, %s, %s)"
        )
        conn.execute(audit, ("runsignup", "ui-rsu", "incremental", "success", 120, "runsignup_sync",
                             NOW - dt.timedelta(hours=2), NOW - dt.timedelta(minutes=1)))  # fmt: skip
        conn.execute(audit, ("haku", "ui-haku", "backfill", "success", 40, "haku_backfill",
                             NOW - dt.timedelta(minutes=70), NOW - dt.timedelta(minutes=50)))  # fmt: skip
        conn.execute(audit, ("haku", "ui-haku", "full", "failed", 0, "haku_sync", NOW - dt.timedelta(minutes=3), NOW))
        # Racing: 2024-01-02 loaded with a race and a runner; 2024-01-03 loaded with a race and no runner.
        conn.execute(
            "INSERT INTO racing.ra_races (race_id, race_date) VALUES ('rac_ui_1', '2024-01-02'), ('rac_ui_2', '2024-01-03')"
        )
        conn.execute("INSERT INTO racing.ra_runners (race_id, horse_id, race_date) VALUES ('rac_ui_1', 'hrs_1', '2024-01-02')")
        for day in ("2024-01-02", "2024-01-03", "2024-01-04"):
            conn.execute(audit, ("racing_api", None, "day", "success", 3, "racing_events", NOW - dt.timedelta(hours=30), NOW - dt.timedelta(hours=30)))
            conn.execute("UPDATE paceline.sync_audit SET unit = %s WHERE audit_id = (SELECT max(audit_id) FROM paceline.sync_audit)", (day,))
    yield warehouse
    for name in CONNECTIONS:
        os.environ.pop(name, None)


def _limiter_calls(dsn: str, provider: str, conn_id: str, calls: int, *, background: bool = False) -> None:
    from paceline.http.limiter import SharedRateLimiter
    from paceline.ui.queries import _identity

    limiter = SharedRateLimiter(dsn)
    key = f"{provider}:{CONNECTIONS['AIRFLOW_CONN_' + conn_id.upper()]['login']}"
    rates = _identity(provider, conn_id, 600 if provider == "runsignup" else 500, None)["rates"]
    try:
        for _ in range(calls):
            limiter.acquire(key, rates, max_wait_s=30, background=background)
    finally:
        limiter.close()


def test_quota_reads_the_limiter_buckets_and_splits_the_audit_by_background(seeded: str) -> None:
    from paceline.ui import queries

    _limiter_calls(seeded, "runsignup", "ui_rsu", 7)
    _limiter_calls(seeded, "haku", "ui_haku", 5, background=True)
    data = queries.quota(seeded, now=NOW)
    by_integration = {c["integrations"][0]: c for c in data["credentials"]}
    rsu, haku, racing = by_integration["ui-rsu"], by_integration["ui-haku"], by_integration["racing_api"]

    assert rsu["window"]["calls"] == 7 and rsu["window"]["limit"] == 600
    assert sum(rsu["per_minute"]) == 7 and rsu["background_window"]["calls"] == 0
    assert haku["window"]["calls"] == 5 and haku["background_window"]["calls"] == 5
    assert haku["background_window"]["limit"] == 42  # a twelfth of 500, rounded up
    assert len(rsu["hours"]) == 24
    assert sum(h["scheduled"] for h in rsu["hours"]) == pytest.approx(120, abs=0.5)
    assert sum(h["background"] for h in rsu["hours"]) == 0
    assert sum(h["background"] for h in haku["hours"]) == pytest.approx(40, abs=0.5)
    assert racing["error"] and "racing_api" in racing["error"] and racing["window"] is None
    # no login reaches the page's data: credentials show as hashed bucket names
    assert "ui-rsu-key" not in json.dumps(data) and "ui-haku-client" not in json.dumps(data)


def test_freshness_counts_events_against_their_tier(seeded: str) -> None:
    from paceline.ui import queries

    rows = {r["integration_id"]: r for r in queries.freshness(seeded, now=NOW)["integrations"]}
    rsu, haku = rows["ui-rsu"], rows["ui-haku"]
    assert (rsu["events"], rsu["fresh"], rsu["late"], rsu["stale"], rsu["never"]) == (2, 1, 0, 1, 0)
    assert rsu["target_s"] == 15 * 60 and rsu["worst_ratio"] == pytest.approx(8.0, rel=0.01)  # 2 days / 6 h
    assert (haku["events"], haku["never"], haku["failures_24h"]) == (1, 1, 1)
    assert rows["racing_api"]["late"] == 1  # last load 30 h ago against a one-day target


def test_racing_calendar_has_one_cell_per_day_since_2015(seeded: str) -> None:
    from paceline.ui import charts, queries

    today = dt.date(2024, 1, 10)
    data = queries.racing_calendar(seeded, today=today)
    states = {d["day"]: d["state"] for d in data["days"]}
    assert len(data["days"]) == (today - dt.date(2015, 1, 1)).days + 1
    assert states["2024-01-02"] == "loaded"
    assert states["2024-01-03"] == "runners_missing"
    assert states["2024-01-04"] == "no_meetings"  # loaded, nothing found on a day with racing expected
    assert states["2024-01-05"] == "not_loaded"
    svg = charts.racing_calendar_chart(data)
    assert svg.count('class="day ') == len(data["days"])
    assert len(re.findall(r'class="day loaded"', svg)) == 1
    assert re.search(r'<text[^>]*>2015</text>', svg) and re.search(r'<text[^>]*>2024</text>', svg)


def test_page_renders_every_chart_and_says_when_bigquery_is_unreachable(seeded: str) -> None:
    from paceline.http.session import RetryPolicy
    from paceline.providers.bigquery import BigQueryClient
    from paceline.ui import page, queries

    _limiter_calls(seeded, "runsignup", "ui_rsu", 3)
    closed = BigQueryClient.anonymous(f"http://127.0.0.1:{free_port()}", "p", retry=RetryPolicy(attempts=0))
    nba = queries.nba_null_share(closed, timeout_s=3)
    assert nba["error"] and nba["days"] == []
    html = page.render(
        queries.quota(seeded, now=NOW),
        queries.freshness(seeded, now=NOW),  # the seeded stamps are relative to NOW, not to when the test runs
        queries.racing_calendar(seeded, today=dt.date(2024, 1, 10)),
        nba,
    )
    for chart in ("gauge", "quota-hours", "quota-minutes", "freshness", "racing", "nba"):
        assert f'data-chart="{chart}"' in html, chart
    assert re.search(r'data-chart="nba" data-empty="true"', html) and "BigQuery" in html
    assert html.count('class="seg fresh"') >= 1 and 'class="seg never"' in html
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_nba_chart_places_days_against_the_band() -> None:
    from paceline.ui import charts

    data = {
        "band": [0.35, 0.45],
        "day_max": 0.6,
        "error": None,
        "days": [
            {"day": "2022-02-10", "rows": 100, "null_rows": 40, "null_share": 0.40},
            {"day": "2022-02-11", "rows": 100, "null_rows": 20, "null_share": 0.20},
            {"day": "2022-02-12", "rows": 100, "null_rows": 90, "null_share": 0.90},
        ],
    }
    svg = charts.nba_chart(data)
    fills = re.findall(r'<circle class="gameday"[^>]*fill="([^"]+)"', svg)
    assert fills == [charts.GREEN, charts.AMBER, charts.RED]


def test_the_app_refuses_a_request_without_a_login(warehouse_dsn: str) -> None:
    from airflow.api_fastapi.app import init_auth_manager
    from fastapi.testclient import TestClient

    from paceline.ui.app import app

    auth = init_auth_manager()  # as the api-server does (SimpleAuthManager by default)
    client = TestClient(app)
    for path in ("/api/quota", "/api/summary", "/api/racing-coverage", "/api/nba-null-share"):
        assert client.get(path).status_code == 401, path
    assert client.get("/api/quota", headers={"Authorization": "Bearer not-a-token"}).status_code == 403
    assert client.get("/icon.svg").status_code == 200  # the nav bar's icon only

    # The page itself sends a browser without a session to Airflow's login form.
    login = client.get("/", follow_redirects=False)
    assert login.status_code == 303 and login.headers["location"] == auth.get_url_login(next_url="http://testserver/")


# 2030-01-01: 2 of 5 rows without minutes (40%, in the band); 2030-01-02: 4 of 5 (80%).
NBA_ROWS = """
INSERT INTO nba_analytics.player_game_summary (game_date, game_id, player_id, minutes_played) VALUES
  (DATE '2030-01-01', 'g1', 1, NULL), (DATE '2030-01-01', 'g1', 2, NULL), (DATE '2030-01-01', 'g1', 3, 12.5),
  (DATE '2030-01-01', 'g1', 4, 20.0), (DATE '2030-01-01', 'g1', 5, 31.0),
  (DATE '2030-01-02', 'g2', 1, NULL), (DATE '2030-01-02', 'g2', 2, NULL), (DATE '2030-01-02', 'g2', 3, NULL),
  (DATE '2030-01-02', 'g2', 4, NULL), (DATE '2030-01-02', 'g2', 5, 30.0)
"""


def test_nba_null_share_per_game_day_from_the_emulator(tmp_path) -> None:
    from paceline.sandbox import bigquery as sb
    from paceline.ui import charts, queries

    if not sb.emulator_available():
        pytest.skip(f"BigQuery emulator venv missing ({sb.bq_python()}): run scripts/setup-bq-emulator.sh")
    emulator = sb.start_emulator(tmp_path / "bigquery", persistent=False)
    try:
        client = emulator.rest_client()
        sb.ensure_schema(client)
        client.query(NBA_ROWS)
        data = queries.nba_null_share(client, timeout_s=30)
    finally:
        emulator.stop()
    assert data["error"] is None
    assert [(d["day"], d["rows"], d["null_rows"]) for d in data["days"]] == [("2030-01-01", 5, 2), ("2030-01-02", 5, 4)]
    assert [d["null_share"] for d in data["days"]] == pytest.approx([0.4, 0.8])
    fills = re.findall(r'<circle class="gameday"[^>]*fill="([^"]+)"', charts.nba_chart(data))
    assert fills == [charts.GREEN, charts.RED]
