"""The work behind the racing DAGs, as plain functions (the DAG files only wire them up).

Errors a retry cannot fix fail the task at once, without retries (``AirflowFailException``), with
a message that says what to fix: a 401/403 from the API names the connection (a wrong or revoked
key fails one call, not every day of a backfill four times with back-off), as do a missing
connection or field; a 404/422 or a parameter outside the spec is a bug to report. Throttles,
5xx and pages that stay empty before ``total`` raise as before, and Airflow retries the day.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from typing import Any

from paceline.config import RACING_API_CONN_ID
from paceline.http.session import PermanentApiError
from paceline.providers.racing_api.client import DEFAULT_REGIONS, RacingApiClient, racecards_available
from paceline.providers.racing_api.hook import RacingApiHook
from paceline.racing import coverage as cov
from paceline.racing.load import PROVIDER, load_day, load_masters


def racing_params() -> dict[str, Any]:
    """The Trigger-form params every racing DAG shares."""
    from airflow.sdk import Param

    return {
        "region_codes": Param(list(DEFAULT_REGIONS), type="array", description="Region codes (lowercase)"),
        "conn_id": Param(RACING_API_CONN_ID, type="string", description="The Racing API connection"),
    }

log = logging.getLogger(__name__)

DAILY_RESULTS_DAYS_BACK = 3  # results keep changing for a while after the race


class CoverageFailed(Exception):
    """Days that were not loaded, or races that have no runners (see paceline.racing.coverage)."""


AUTH_STATUSES = (401, 403)


def _fail(message: str) -> Exception:
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(message)


@contextmanager
def fail_fast(conn_id: str) -> Iterator[None]:
    """Turn the errors no retry can fix into AirflowFailException (see the module docstring)."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        yield
    except PermanentApiError as exc:
        if exc.status in AUTH_STATUSES:
            raise _fail(
                f"The Racing API refused the credentials of Airflow connection {conn_id!r} (HTTP {exc.status}): "
                f"{exc}. The Username/Password are wrong or revoked, or the plan lacks this endpoint. "
                f"Fix connection {conn_id!r}, then clear the failed tasks; not retried."
            ) from exc
        raise _fail(f"The Racing API (connection {conn_id!r}) answered what no retry can change: {exc}") from exc
    except AirflowNotFoundException as exc:
        raise _fail(
            f"Airflow connection {conn_id!r} does not exist: create it (host = the API base URL, "
            f"login/password = the API's Username/Password); not retried. ({exc})"
        ) from exc
    except ValueError as exc:  # a connection without a field, a bad date, a parameter outside the spec
        raise _fail(f"{exc} (connection {conn_id!r}); not retried") from exc


def check_connection(conn_id: str = PROVIDER, *, client: RacingApiClient | None = None) -> str:
    """One call (``/v1/courses/regions``) before a run maps its days: a wrong or revoked key fails
    the run here, once, instead of in every mapped day."""
    with fail_fast(conn_id):
        api = client or RacingApiClient(RacingApiHook(conn_id))
        try:
            regions = api.regions()
        finally:
            if client is None:
                api.close()
    return f"connection {conn_id!r}: {len(regions)} regions"


def _day(value: date | datetime | str) -> date:
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def interval_days(start: date | datetime | str, end: date | datetime | str) -> list[str]:
    """The days of a data interval [start, end): a monthly run maps over these."""
    return cov.month_days(_day(start), _day(end))


def events_day(day: str, *, conn_id: str = PROVIDER, region_codes: Sequence[str] = DEFAULT_REGIONS,
               dsn: str | None = None, client: RacingApiClient | None = None) -> dict[str, Any]:  # fmt: skip
    """racing_events' mapped task: racecards (where the API has them) and results of one day."""
    with fail_fast(conn_id):
        return load_day(day, conn_id=conn_id, dsn=dsn, region_codes=region_codes, client=client, sync_type="day")


def coverage_check(start: date | datetime | str, end_exclusive: date | datetime | str, *, dsn: str | None = None,
                   today: date | None = None, fail: bool = True) -> list[dict[str, Any]]:  # fmt: skip
    """Report coverage of [start, end); raise CoverageFailed on failing flags (see coverage.py)."""
    first, stop = _day(start), _day(end_exclusive)
    report = cov.coverage(dsn, first, stop - timedelta(days=1), today=today)
    log.info("racing coverage %s..%s\n%s", first, stop, cov.format_report(report))
    for d in report:
        if "no_meetings" in d["flags"]:
            log.warning("no meetings on %s although racing is expected (the API returned none)", d["day"])
    bad = cov.failures(report)
    if bad and fail:
        detail = ", ".join(f"{d['day']} ({'/'.join(d['flags'])})" for d in bad)
        raise CoverageFailed(f"{len(bad)} day(s) incomplete: {detail}")
    return report


def daily_plan(logical_day: date | datetime | str, *, today: date | None = None) -> list[dict[str, Any]]:
    """racing_daily's units: results of the last 3 days (yesterday first) and racecards of today and
    tomorrow, each a day with what to fetch for it."""
    base = _day(logical_day)
    plan: list[dict[str, Any]] = []
    for back in range(1, DAILY_RESULTS_DAYS_BACK + 1):
        plan.append({"day": (base - timedelta(days=back)).isoformat(), "racecards": False, "results": True})
    for ahead in (0, 1):
        day = base + timedelta(days=ahead)
        if racecards_available(day, today):
            plan.append({"day": day.isoformat(), "racecards": True, "results": False})
    return plan


def daily_unit(unit: dict[str, Any], *, conn_id: str = PROVIDER, region_codes: Sequence[str] = DEFAULT_REGIONS,
               dsn: str | None = None, client: RacingApiClient | None = None) -> dict[str, Any]:  # fmt: skip
    sync_type = "results" if unit["results"] else "racecards"
    with fail_fast(conn_id):
        return load_day(unit["day"], conn_id=conn_id, dsn=dsn, region_codes=region_codes, client=client,
                        racecards=unit["racecards"], results=unit["results"], sync_type=sync_type)  # fmt: skip


def masters(*, conn_id: str = PROVIDER, region_codes: Sequence[str] = DEFAULT_REGIONS, dsn: str | None = None,
            client: RacingApiClient | None = None) -> dict[str, Any]:  # fmt: skip
    with fail_fast(conn_id):
        return load_masters(conn_id=conn_id, dsn=dsn, region_codes=list(region_codes), client=client)
