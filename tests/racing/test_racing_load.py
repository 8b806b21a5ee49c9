"""Loading racing days from the Racing API stand-in into the warehouse: ground truth, idempotence,
failures and throttles, abandoned races and non-finishers, empty days and coverage."""

from __future__ import annotations

from datetime import date, timedelta

import psycopg
import pytest
import requests

from paceline.http.session import TransientApiError
from paceline.racing import coverage as cov
from paceline.racing import tasks
from paceline.racing.load import load_day, load_masters

from .conftest import JAN_2024, fast_client
from .truth import assert_warehouse_matches, checksums, expected


def load_days(days, client) -> list[dict]:
    return [load_day(d, client=client) for d in days]


def test_a_month_equals_the_standins_ground_truth_and_a_rerun_changes_nothing(racing_db, standin, racing_api):
    client = fast_client()
    first = load_days(JAN_2024, client)
    truth = expected(standin, JAN_2024)
    assert_warehouse_matches(racing_db, truth)
    assert sum(s["races"] for s in first) == len(truth["races"]) > 50
    assert 500 not in client.session.stats.by_status and 422 not in client.session.stats.by_status
    # Every day: one racecards page and one results page (a small day fits one page of each).
    assert client.calls == 2 * len(JAN_2024)
    before = checksums(racing_db)

    second = load_days(JAN_2024, fast_client())
    for summary in second:
        for table, counts in summary["tables"].items():
            assert counts["inserted"] == 0 and counts["updated"] == 0, (summary["day"], table, counts)
        assert summary["changed"] == 0
    assert checksums(racing_db) == before

    # One audit row per day and run, in the same transactions as the data.
    with psycopg.connect(racing_db) as conn:
        audited = conn.execute(
            "SELECT count(*), count(DISTINCT unit) FROM paceline.sync_audit WHERE provider = 'racing_api' AND status = 'success'"
        ).fetchone()
    assert audited == (62, 31)


def test_abandoned_races_and_non_finishers_are_kept(racing_db, standin, racing_api):
    load_days(JAN_2024, fast_client())
    truth = expected(standin, JAN_2024)
    abandoned_cards = {rid for rid, r in truth["races"].items() if r["card"] and r["card"]["is_abandoned"]}
    assert abandoned_cards, "the stand-in month should hold an abandoned race"
    with psycopg.connect(racing_db) as conn:
        stored_abandoned = {
            r[0] for r in conn.execute("SELECT race_id FROM racing.ra_races WHERE is_abandoned")
        }
        positions = dict(
            conn.execute(
                "SELECT coalesce(position, '<null>'), count(*) FROM racing.ra_runners WHERE has_result GROUP BY 1"
            ).fetchall()
        )
        non_runners = conn.execute("SELECT count(*) FROM racing.ra_runners WHERE is_non_runner").fetchone()[0]
    assert abandoned_cards <= stored_abandoned
    assert {"F", "PU"} & set(positions), positions  # non-finishers are rows with their code
    assert non_runners == positions.get("<null>", 0) + positions.get("", 0)
    assert non_runners > 0


def load_days_retrying(days, client, attempts: int = 3) -> list[dict]:
    """As Airflow would: a day whose load raised is tried again (its transaction left nothing)."""
    out = []
    for day in days:
        for attempt in range(1, attempts + 1):
            try:
                out.append(load_day(day, client=client))
                break
            except TransientApiError:
                if attempt == attempts:
                    raise
    return out


def test_random_5xx_and_a_429_storm_end_with_the_same_data(racing_db, standin, racing_api):
    days = JAN_2024[:8]
    load_days(days, fast_client())
    clean = checksums(racing_db)
    wipe = "TRUNCATE racing.ra_races, racing.ra_runners, racing.ra_horse_pedigree, racing.ra_mst_horses"
    with psycopg.connect(racing_db, autocommit=True) as conn:
        conn.execute(wipe)

    # 10% random 5xx: retried with backoff inside the session.
    requests.post(f"{racing_api.url}/_control/knobs", json={"error_rate": 0.1}, timeout=5)
    client = fast_client()
    load_days_retrying(days, client)
    assert standin.stats()["errors_injected"] > 0
    assert client.session.stats.retries > 0
    assert checksums(racing_db) == clean

    # A 429 storm: the stand-in held at 3 calls/s while the client (no limiter) hammers it.
    with psycopg.connect(racing_db, autocommit=True) as conn:
        conn.execute(wipe)
    requests.post(f"{racing_api.url}/_control/knobs", json={"error_rate": 0.0, "per_second": 3.0}, timeout=5)
    standin.reset_stats()
    client = fast_client()
    load_days(days, client)
    assert sum(standin.stats()["throttles"].values()) > 5
    assert client.session.stats.by_status.get(429, 0) > 5
    assert checksums(racing_db) == clean


def test_soft_throttle_empty_200_is_retried_not_taken_as_data(racing_db, standin, racing_api):
    days = JAN_2024[8:14]
    load_days(days, fast_client())
    clean = checksums(racing_db)
    with psycopg.connect(racing_db, autocommit=True) as conn:
        conn.execute("TRUNCATE racing.ra_races, racing.ra_runners")
    # Every throttled list call is answered 200 {"results": [], "total": null}.
    requests.post(
        f"{racing_api.url}/_control/knobs", json={"per_second": 3.0, "soft_throttle_rate": 1.0}, timeout=5
    )
    client = fast_client()
    summaries = load_days(days, client)
    assert client.session.stats.throttles > 0
    assert client.session.stats.by_status.get(429, 0) == 0  # only the soft kind was seen
    assert all(
        s["races"] > 0
        for s in summaries
        if date.fromisoformat(s["day"]) not in standin.empty_days(days[0], days[-1])
    )
    assert checksums(racing_db) == clean


def test_a_day_with_no_meetings_passes_and_coverage_names_it(racing_db, standin, racing_api):
    empty = date(2024, 1, 17)
    requests.post(
        f"{racing_api.url}/_control/mutate",
        json={"action": "set_day_empty", "date": empty.isoformat()},
        timeout=5,
    )
    days = JAN_2024[14:21]
    summaries = load_days(days, fast_client())
    assert {s["day"]: s["races"] for s in summaries}[empty.isoformat()] == 0

    report = cov.coverage(racing_db, days[0], days[-1])
    by_day = {d["day"]: d for d in report}
    assert by_day[empty.isoformat()]["flags"] == ["no_meetings"]
    for day in standin.empty_days(days[0], days[-1]):
        assert "no_meetings" in by_day[day.isoformat()]["flags"]
    assert all(d["flags"] == [] for d in report if d["races"]), report
    # A loaded empty day is reported, not failed; a day never loaded fails the coverage task.
    assert tasks.coverage_check(days[0], days[-1] + timedelta(days=1), dsn=racing_db)
    with pytest.raises(tasks.CoverageFailed, match="2024-01-22"):
        tasks.coverage_check(days[0], days[-1] + timedelta(days=2), dsn=racing_db)


def test_coverage_flags_races_without_runners(racing_db, standin, racing_api):
    day = JAN_2024[21]
    load_day(day, client=fast_client())
    with psycopg.connect(racing_db, autocommit=True) as conn:
        race_id = conn.execute(
            "SELECT race_id FROM racing.ra_races WHERE race_date = %s AND NOT is_abandoned LIMIT 1", (day,)
        ).fetchone()[0]
        conn.execute("DELETE FROM racing.ra_runners WHERE race_id = %s", (race_id,))
    [entry] = cov.coverage(racing_db, day, day)
    assert entry["flags"] == ["races_without_runners"] and entry["unexplained_races_without_runners"] == 1
    assert cov.failures([entry]) == [entry]


def test_masters_regions_courses_and_bookmakers(racing_db, standin, racing_api):
    summary = load_masters(client=fast_client(), bookmaker_days=[JAN_2024[0]])
    with psycopg.connect(racing_db) as conn:
        regions = dict(conn.execute("SELECT region_code, region FROM racing.ra_mst_regions").fetchall())
        courses = {
            r[0]: r[1:]
            for r in conn.execute("SELECT course_id, course, region_code, region FROM racing.ra_mst_courses")
        }
        bookmakers = {r[0] for r in conn.execute("SELECT bookmaker FROM racing.ra_mst_bookmakers")}
    assert regions == {r["region_code"]: r["region"] for r in standin.regions()}
    assert courses == {
        c["id"]: (c["course"], c["region_code"], c["region"]) for c in standin.courses(["gb", "ire"])
    }
    assert bookmakers == expected(standin, [JAN_2024[0]])["bookmakers"]
    assert bookmakers <= set(standin.bookmakers())
    assert summary["calls"] == 3
    again = load_masters(client=fast_client(), bookmaker_days=[JAN_2024[0]])
    assert all(c["inserted"] == 0 and c["updated"] == 0 for c in again["tables"].values())


def test_daily_plan_and_units(racing_db, standin, racing_api):
    today = standin.today
    plan = tasks.daily_plan(today)
    assert [(u["day"], u["racecards"], u["results"]) for u in plan] == [
        ((today - timedelta(days=1)).isoformat(), False, True),
        ((today - timedelta(days=2)).isoformat(), False, True),
        ((today - timedelta(days=3)).isoformat(), False, True),
        (today.isoformat(), True, False),
        ((today + timedelta(days=1)).isoformat(), True, False),
    ]
    client = fast_client()
    for unit in plan:
        tasks.daily_unit(unit, client=client)
    with psycopg.connect(racing_db) as conn:
        cards = conn.execute(
            "SELECT count(*) FROM racing.ra_races WHERE has_racecard AND NOT has_result"
        ).fetchone()[0]
        results = conn.execute("SELECT count(*) FROM racing.ra_races WHERE has_result").fetchone()[0]
    want_cards = sum(len(standin.racecards_for(today + timedelta(days=i))) for i in (0, 1))
    want_results = sum(len(standin.results_for(today - timedelta(days=i))) for i in (1, 2, 3))
    assert (cards, results) == (want_cards, want_results)
    # A later results load for a day with a racecard keeps the racecard's columns.
    tasks.daily_unit(
        {"day": (today + timedelta(days=1)).isoformat(), "racecards": False, "results": True}, client=client
    )
    with psycopg.connect(racing_db) as conn:
        kept = conn.execute(
            "SELECT count(*) FROM racing.ra_races WHERE race_date = %s AND raw_racecard IS NOT NULL",
            (today + timedelta(days=1),),
        ).fetchone()[0]
    assert kept == len(standin.racecards_for(today + timedelta(days=1)))


def test_history_before_racecards_loads_results_only(racing_db, monkeypatch):
    """Before 2023-01-23 there are no racecards: none are asked for, and abandoned races are
    recognised from their results alone."""
    import json

    from paceline.sandbox.base import Knobs, serve
    from paceline.sandbox.racing_api import build

    old = build(
        "small",
        seed=11,
        knobs=Knobs(per_second=1000.0, seed=11),
        windows=[(date(2022, 3, 1), date(2022, 3, 31))],
    )
    server = serve(old)
    cred = old.credentials()[0]
    monkeypatch.setenv(
        "AIRFLOW_CONN_RACING_API",
        json.dumps(
            {"conn_type": "http", "host": server.url, "login": cred["login"], "password": cred["password"]}
        ),
    )
    try:
        days = [date(2022, 3, 1) + timedelta(days=i) for i in range(31)]
        client = fast_client()
        summaries = load_days(days, client)
        assert client.calls == len(days)  # results only: one page a day, no racecard call
        assert old.stats()["calls"]["paceline"].get("racecards/pro", 0) == 0
        assert_warehouse_matches(racing_db, expected(old, days))
        truth_abandoned = {
            r["race_id"] for d in days for r in old.results_for(d) if "abandon" in r["comments"].lower()
        }
        with psycopg.connect(racing_db) as conn:
            stored = {r[0] for r in conn.execute("SELECT race_id FROM racing.ra_races WHERE is_abandoned")}
        assert truth_abandoned and truth_abandoned <= stored
        report = cov.coverage(racing_db, days[0], days[-1])
        assert cov.failures(report) == []
        assert sum(s["races"] for s in summaries) == sum(d["races"] for d in report)
        assert cov.main(["--start", "2022-03-01", "--end", "2022-03-31", "--dsn", racing_db]) == 0
    finally:
        server.stop()


def test_concurrent_days_share_masters_without_deadlock(racing_db, standin, racing_api):
    """Mapped days run at once and upsert the same horses, jockeys...: all commit, data is exact."""
    from concurrent.futures import ThreadPoolExecutor

    days = JAN_2024[:12]
    with ThreadPoolExecutor(max_workers=4) as pool:
        summaries = list(pool.map(lambda d: load_day(d, client=fast_client()), days))
    assert len(summaries) == len(days)
    assert_warehouse_matches(racing_db, expected(standin, days))
