"""Racing loses nothing and fails fast: records without an id are rejected one by one, a page
that stays empty before ``total`` fails the day whole, coverage counts only a day whose last
load succeeded, and a refused key fails the task at once naming its connection.

Every fault is driven by counts through the stand-in's ``quirk`` mutation ("the next N ...").
"""

from __future__ import annotations

import json
from datetime import date

import psycopg
import pytest
import requests
from airflow.sdk.exceptions import AirflowFailException

from paceline.http.limiter import per_second
from paceline.providers.racing_api.client import EMPTY_PAGE_ATTEMPTS, IncompletePaging, RacingApiClient
from paceline.providers.racing_api.hook import RacingApiHook
from paceline.racing import coverage as cov
from paceline.racing import tasks
from paceline.racing.load import load_day

from .conftest import FAST_RETRY, JAN_2024, fast_client
from .truth import assert_warehouse_matches, expected


def quirk(server, **counts: int) -> None:
    answer = requests.post(f"{server.url}/_control/mutate", json={"action": "quirk", **counts}, timeout=5)
    assert answer.status_code == 200, answer.text


def paging_client(page: int = 2) -> RacingApiClient:
    """A client paging results by `page` (a small day then needs several pages), no limiter."""
    hook = RacingApiHook(rates=(per_second(500),), use_limiter=False, retry=FAST_RETRY)
    return RacingApiClient(hook, results_page=page)


def busy_day(standin, least: int = 4) -> date:
    return next(d for d in JAN_2024 if len(standin.results_for(d)) >= least)


def day_rows(dsn: str, day: date) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM racing.ra_races WHERE race_date = %s", (day,)).fetchone()[0]


def last_audit(dsn: str, day: date) -> tuple[str, str | None]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT status, error FROM paceline.sync_audit WHERE provider = 'racing_api' AND unit = %s "
            "ORDER BY finished_at DESC, audit_id DESC LIMIT 1",
            (day.isoformat(),),
        ).fetchone()


# -- records without an id -------------------------------------------------------------------------


def test_records_without_race_id_are_each_rejected_with_their_raw_body(racing_db, standin, racing_api):
    day = busy_day(standin)
    cards = standin.racecards_for(day)
    quirk(racing_api, records_without_id=3)  # the first three racecards of the day lose their id

    summary = load_day(day, client=fast_client())

    assert summary["rejected"] == 3
    with psycopg.connect(racing_db) as conn:
        rows = conn.execute(
            "SELECT record_key, reason, raw FROM paceline.rejected_records WHERE provider = 'racing_api' "
            "AND unit = %s ORDER BY rejected_id",
            (day.isoformat(),),
        ).fetchall()
    assert len(rows) == 3, "three records without an id must stay three rejections, not collapse into one"
    bodies = [json.loads(raw) for _, _, raw in rows]
    assert bodies == [{k: v for k, v in card.items() if k != "race_id"} for card in cards[:3]]
    assert {(key, reason) for key, reason, _ in rows} == {(None, "racecard without race_id")}
    # The rest of the day is kept: its races come from the results, which kept their ids.
    assert day_rows(racing_db, day) == len(standin.results_for(day))


# -- an empty page before total --------------------------------------------------------------------


def test_an_empty_page_before_total_is_asked_again_and_the_day_is_complete(racing_db, standin, racing_api):
    day = busy_day(standin)
    quirk(racing_api, empty_pages=EMPTY_PAGE_ATTEMPTS - 1, empty_pages_min_skip=1)  # pages after the first
    client = paging_client()

    summary = load_day(day, client=client)

    assert client.empty_pages == EMPTY_PAGE_ATTEMPTS - 1 and summary["throttles"] == EMPTY_PAGE_ATTEMPTS - 1
    assert_warehouse_matches(racing_db, expected(standin, [day]))
    assert last_audit(racing_db, day) == ("success", None)


def test_a_page_that_stays_empty_fails_the_day_and_commits_none_of_it(racing_db, standin, racing_api):
    day = busy_day(standin)
    quirk(racing_api, empty_pages=EMPTY_PAGE_ATTEMPTS, empty_pages_min_skip=1)
    client = paging_client()

    with pytest.raises(IncompletePaging, match="came back empty"):
        load_day(day, client=client)

    assert client.empty_pages == EMPTY_PAGE_ATTEMPTS
    assert day_rows(racing_db, day) == 0, "the first page's races must not be committed alone"
    status, error = last_audit(racing_db, day)
    assert status == "failed" and "IncompletePaging" in error
    [entry] = cov.coverage(racing_db, day, day)
    assert "not_loaded" in entry["flags"] and entry["last_load"]["status"] == "failed"

    # The retry Airflow makes (the quirk is spent) loads the whole day.
    load_day(day, client=client)
    assert_warehouse_matches(racing_db, expected(standin, [day]))
    [entry] = cov.coverage(racing_db, day, day)
    assert entry["flags"] == [] and entry["loaded_at"] is not None


# -- coverage: the last load counts ----------------------------------------------------------------


def test_coverage_counts_a_day_only_when_its_last_load_succeeded(racing_db, standin, racing_api):
    first, second = JAN_2024[2], JAN_2024[3]
    for day in (first, second):
        tasks.events_day(day.isoformat(), client=fast_client())
    assert cov.failures(cov.coverage(racing_db, first, second)) == []

    quirk(racing_api, status_calls=1, status=403)  # a later load of `second` is refused
    with pytest.raises(AirflowFailException):
        tasks.events_day(second.isoformat(), client=fast_client())

    report = {d["day"]: d for d in cov.coverage(racing_db, first, second)}
    assert report[first.isoformat()]["flags"] == []
    failed = report[second.isoformat()]
    assert failed["flags"] == ["not_loaded"] and failed["loaded_at"] is None
    assert failed["last_load"]["status"] == "failed" and "403" in failed["last_load"]["error"]
    assert failed["races"] > 0, "its rows from the earlier load are still there, but stale"
    with pytest.raises(tasks.CoverageFailed, match=second.isoformat()):
        tasks.coverage_check(first, second.replace(day=second.day + 1), dsn=racing_db)
    assert "last load failed" in cov.format_report([failed])

    tasks.events_day(second.isoformat(), client=fast_client())  # cleared and run again
    assert cov.failures(cov.coverage(racing_db, first, second)) == []


# -- a refused key fails at once ------------------------------------------------------------------


def test_wrong_credentials_fail_the_task_at_once_naming_the_connection(racing_db, standin, racing_api, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_RACING_BACKUP",
        json.dumps({"conn_type": "http", "host": racing_api.url, "login": "paceline", "password": "s3cret-REVOKED-pw"}),
    )
    day = JAN_2024[5].isoformat()
    # The hook's own retry policy (back-off 2, 4, 8... s) and the shared limiter, as in a task.
    with pytest.raises(AirflowFailException) as failed:
        tasks.events_day(day, conn_id="racing_backup")
    message = str(failed.value)
    assert "'racing_backup'" in message and "HTTP 401" in message and "s3cret-REVOKED-pw" not in message
    assert standin.stats()["total_calls"] == 1, "one call, no retry"
    assert last_audit(racing_db, JAN_2024[5])[0] == "failed"

    with pytest.raises(AirflowFailException, match="'racing_backup'.*HTTP 401"):
        tasks.check_connection("racing_backup")
    assert standin.stats()["total_calls"] == 2


def test_a_403_fails_at_once_and_a_run_stops_before_mapping_its_days(racing_db, standin, racing_api):
    quirk(racing_api, status_calls=1, status=403)
    with pytest.raises(AirflowFailException, match="'racing_api'.*HTTP 403"):
        tasks.check_connection("racing_api")
    assert standin.stats()["total_calls"] == 1
    assert "connection 'racing_api'" in tasks.check_connection("racing_api")  # the key works again

    quirk(racing_api, status_calls=1, status=403)
    with pytest.raises(AirflowFailException, match="'racing_api'.*HTTP 403"):
        tasks.daily_unit({"day": JAN_2024[6].isoformat(), "racecards": True, "results": True})
    assert standin.stats()["total_calls"] == 3


def test_a_missing_connection_fails_at_once(racing_db, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_RACING_NOWHERE", raising=False)
    with pytest.raises(AirflowFailException, match="'racing_nowhere' does not exist"):
        tasks.check_connection("racing_nowhere")


def test_transient_failures_still_raise_for_airflow_to_retry(racing_db, standin, racing_api):
    quirk(racing_api, status_calls=10, status=503)
    with pytest.raises(Exception) as raised:
        tasks.events_day(JAN_2024[7].isoformat(), client=fast_client())
    assert not isinstance(raised.value, AirflowFailException)
