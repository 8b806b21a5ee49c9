"""Calls of The Racing API that Paceline makes, each inside the spec's (v1.4.3) parameter bounds.

Every parameter is validated before the call: a value the spec rejects (``limit`` over 100 on
results, ``skip`` over 500 on racecards, a date range over 365 days...) raises
:class:`ParameterOutOfBounds` here and is never sent. Racecards are only asked for where the
API has them (from 2023-01-23 to 7 days ahead); other dates return ``[]`` without a call.

Paging loses nothing: a page that comes back empty while ``total`` says more remain is the API's
empty 200 under load, not the end; it is asked again (EMPTY_PAGE_ATTEMPTS in all, with the
throttle back-off) and then :class:`IncompletePaging` is raised, so the day fails whole instead
of committing part of itself. Records without a ``race_id`` are all kept (not merged under one
missing key) for the loader to reject one by one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from paceline.http.session import ApiSession, TransientApiError
from paceline.providers.racing_api.hook import ONE_PER_SECOND, RacingApiHook

RACECARDS_FROM = date(2023, 1, 23)  # "Historical racecards are available from 2023-01-23"
RACECARDS_AHEAD_DAYS = 7  # "Future racecards are available up to 1 week in advance"
RESULTS_MAX_RANGE_DAYS = 365
RESULTS_EARLIEST = date(1988, 1, 1)
# Spec bounds, per endpoint: (limit min, limit max, skip max).
RACECARDS_BOUNDS = (1, 500, 500)
RESULTS_BOUNDS = (1, 100, 20000)
RESULTS_PAGE = 100  # the spec's maximum; one day of GB+IRE is usually 1-2 pages
RACECARDS_PAGE = 500
DEFAULT_REGIONS = ("gb", "ire")
EMPTY_PAGE_ATTEMPTS = 4  # an empty page before `total`: asked 4 times in all, then the day fails

log = logging.getLogger(__name__)


class ParameterOutOfBounds(ValueError):
    """A parameter the spec would reject; raised before anything is sent."""


class IncompletePaging(TransientApiError):
    """Pages kept coming back empty before ``total`` was reached: what was read is incomplete and
    must not be committed. Transient: a later try of the task usually gets every page."""


def _check_page(name: str, limit: int, skip: int, bounds: tuple[int, int, int]) -> None:
    lo, hi, skip_max = bounds
    if not lo <= limit <= hi:
        raise ParameterOutOfBounds(f"{name}: limit {limit} outside {lo}..{hi}")
    if not 0 <= skip <= skip_max:
        raise ParameterOutOfBounds(f"{name}: skip {skip} outside 0..{skip_max}")


def _check_codes(name: str, codes: Sequence[str]) -> list[str]:
    if isinstance(codes, str):
        codes = [codes]
    cleaned = [c.strip().lower() for c in codes if c and c.strip()]
    if not cleaned or any(not c.isalpha() for c in cleaned):
        raise ParameterOutOfBounds(f"{name}: region codes must be letters, e.g. gb, ire; got {codes!r}")
    return cleaned


def _whole(value: Any) -> int | None:
    """An envelope's ``total`` as an int; None when missing or not a whole number."""
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _as_date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def racecards_available(day: date, today: date | None = None) -> bool:
    """Whether the API serves racecards for `day` (Pro plan: 2023-01-23 .. today + 7 days)."""
    today = today or datetime.now(UTC).date()
    return RACECARDS_FROM <= day <= today + timedelta(days=RACECARDS_AHEAD_DAYS)


class RacingApiClient:
    """The Racing API calls, over a hook's rate-limited session."""

    def __init__(
        self,
        hook: RacingApiHook | None = None,
        *,
        today: date | None = None,
        results_page: int = RESULTS_PAGE,
    ) -> None:
        self.hook = hook or RacingApiHook()
        self.session: ApiSession = self.hook.get_conn()
        self._slow_session: ApiSession | None = None
        self._today = today
        self.results_page = results_page
        self.empty_pages = 0  # pages answered empty before `total`, asked again

    @property
    def today(self) -> date:
        return self._today or datetime.now(UTC).date()

    @property
    def slow_session(self) -> ApiSession:
        """Session for the endpoints the spec limits to 1/s (courses, regions)."""
        if self._slow_session is None:
            self._slow_session = self.hook.get_conn(rates=ONE_PER_SECOND if self.hook.rates else ())
        return self._slow_session

    @property
    def calls(self) -> int:
        return self.session.stats.calls + (self._slow_session.stats.calls if self._slow_session else 0)

    @property
    def throttles(self) -> int:
        """Throttles answered: 429s, empty 200s without ``total``, and empty pages before ``total``."""
        slow = self._slow_session.stats.throttles if self._slow_session else 0
        return self.session.stats.throttles + slow + self.empty_pages

    def close(self) -> None:
        self.session.close()
        if self._slow_session is not None:
            self._slow_session.close()

    # -- masters -----------------------------------------------------------------------------
    def regions(self) -> list[dict[str, Any]]:
        body = self.slow_session.get_json("/v1/courses/regions")
        return list(body or [])

    def courses(self, region_codes: Sequence[str] = DEFAULT_REGIONS) -> list[dict[str, Any]]:
        codes = _check_codes("courses", region_codes)
        body = self.slow_session.get_json("/v1/courses", {"region_codes": codes})
        return list((body or {}).get("courses") or [])

    # -- racecards ------------------------------------------------------------------------------
    def racecards_pro(
        self, day: date | str, region_codes: Sequence[str] = DEFAULT_REGIONS, *, limit: int = RACECARDS_PAGE
    ) -> list[dict[str, Any]]:
        """Every Pro racecard of one date; [] without a call where the API has none."""
        day = _as_date(day)
        if not racecards_available(day, self.today):
            return []
        codes = _check_codes("racecards", region_codes)
        params = {"date": day.isoformat(), "region_codes": codes}
        return self._pages("/v1/racecards/pro", "racecards", params, limit, RACECARDS_BOUNDS)

    # -- results ----------------------------------------------------------------------------------
    def results_for_day(
        self, day: date | str, region_codes: Sequence[str] = DEFAULT_REGIONS, *, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Every result of one date, paged with ``skip`` until ``total``.

        One date per query is the provider's own advice for bulk history; it also keeps each
        day's unit of work (and its retry) independent.
        """
        day = _as_date(day)
        if day < RESULTS_EARLIEST or day > self.today:
            return []  # no results exist there; the API would answer 422 or nothing
        codes = _check_codes("results", region_codes)
        params = {"start_date": day.isoformat(), "end_date": day.isoformat(), "region": codes}
        return self._pages(
            "/v1/results", "results", params, self.results_page if limit is None else limit, RESULTS_BOUNDS
        )

    def results_range(
        self,
        start: date | str,
        end: date | str,
        region_codes: Sequence[str] = DEFAULT_REGIONS,
        *,
        limit: int = RESULTS_PAGE,
    ) -> list[dict[str, Any]]:
        """Results over a range of at most 365 days (checked before sending)."""
        start, end = _as_date(start), _as_date(end)
        if start > end or (end - start).days > RESULTS_MAX_RANGE_DAYS:
            raise ParameterOutOfBounds(
                f"results: {start}..{end} is not a range of 0..{RESULTS_MAX_RANGE_DAYS} days"
            )
        codes = _check_codes("results", region_codes)
        params = {"start_date": start.isoformat(), "end_date": end.isoformat(), "region": codes}
        return self._pages("/v1/results", "results", params, limit, RESULTS_BOUNDS)

    def result(self, race_id: str) -> dict[str, Any]:
        if not race_id or "/" in race_id:
            raise ParameterOutOfBounds(f"result: bad race id {race_id!r}")
        return self.session.get_json(f"/v1/results/{race_id}")

    # -- paging --------------------------------------------------------------------------------------
    def _pages(
        self, path: str, key: str, params: dict[str, Any], limit: int, bounds: tuple[int, int, int]
    ) -> list[dict[str, Any]]:
        items: dict[str, dict[str, Any]] = {}
        without_id: list[Any] = []  # each kept: under one missing key they would collapse into one
        skip = 0
        while True:
            _check_page(path, limit, skip, bounds)
            batch, total = self._page(path, key, {**params, "limit": limit, "skip": skip})
            for item in batch:
                race_id = item.get("race_id") if isinstance(item, dict) else None
                if race_id:
                    # Keyed by race id: a race that moves between pages while paging is kept once.
                    items[str(race_id)] = item
                else:
                    without_id.append(item)
            skip += len(batch)
            if skip >= total:
                break
            if skip > bounds[2]:
                raise ParameterOutOfBounds(
                    f"{path}: {total} items need skip {skip} over the spec's {bounds[2]}; split the query"
                )
        return [*items.values(), *without_id]

    def _page(self, path: str, key: str, params: dict[str, Any]) -> tuple[list[Any], int]:
        """One page's items and ``total``; a page empty before ``total`` is asked again, then raises."""
        skip = params["skip"]
        for attempt in range(1, EMPTY_PAGE_ATTEMPTS + 1):
            page = self.session.get_json(path, params)
            page = page if isinstance(page, dict) else {}
            batch = page.get(key) or []
            total = _whole(page.get("total"))
            # A page without a total is never data (the session's body check waits such answers
            # out as throttles; this holds without it too).
            if total is not None and (batch or skip >= total):
                return list(batch), total
            self.empty_pages += 1
            if attempt < EMPTY_PAGE_ATTEMPTS:
                delay = self.session.retry.throttle_backoff(attempt)
                log.warning("%s: page at skip %d came back empty although total is %s; asking again in %.1fs",
                            path, skip, total, delay)  # fmt: skip
                self.session.sleep(delay)
        raise IncompletePaging(
            f"GET {path} (skip {skip}): the page came back empty {EMPTY_PAGE_ATTEMPTS} times although "
            f"total is {total}; the pages read so far are incomplete and are not kept (the API's empty "
            "answer under load: a later try reads them again)",
            url=self.session.url(path),
        )
