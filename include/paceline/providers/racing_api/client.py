"""Calls of The Racing API that Paceline makes, each inside the spec's (v1.4.3) parameter bounds.

Every parameter is validated before the call: a value the spec rejects (``limit`` over 100 on
results, ``skip`` over 500 on racecards, a date range over 365 days...) raises
:class:`ParameterOutOfBounds` here and is never sent. Racecards are only asked for where the
API has them (from 2023-01-23 to 7 days ahead); other dates return ``[]`` without a call.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from paceline.http.session import ApiSession
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


class ParameterOutOfBounds(ValueError):
    """A parameter the spec would reject; raised before anything is sent."""


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


def _as_date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def racecards_available(day: date, today: date | None = None) -> bool:
    """Whether the API serves racecards for `day` (Pro plan: 2023-01-23 .. today + 7 days)."""
    today = today or datetime.now(UTC).date()
    return RACECARDS_FROM <= day <= today + timedelta(days=RACECARDS_AHEAD_DAYS)


class RacingApiClient:
    """The Racing API calls, over a hook's rate-limited session."""

    def __init__(self, hook: RacingApiHook | None = None, *, today: date | None = None) -> None:
        self.hook = hook or RacingApiHook()
        self.session: ApiSession = self.hook.get_conn()
        self._slow_session: ApiSession | None = None
        self._today = today

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
        return self.session.stats.throttles + (
            self._slow_session.stats.throttles if self._slow_session else 0
        )

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
        self, day: date | str, region_codes: Sequence[str] = DEFAULT_REGIONS, *, limit: int = RESULTS_PAGE
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
        return self._pages("/v1/results", "results", params, limit, RESULTS_BOUNDS)

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
        skip = 0
        while True:
            _check_page(path, limit, skip, bounds)
            page = self.session.get_json(path, {**params, "limit": limit, "skip": skip}) or {}
            batch = page.get(key) or []
            for item in batch:
                # Keyed by race id: a race that moves between pages while paging is kept once.
                items[str(item.get("race_id"))] = item
            total = page.get("total")
            skip += len(batch)
            if not batch or total is None or skip >= int(total):
                break
            if skip > bounds[2]:
                raise ParameterOutOfBounds(
                    f"{path}: {total} items need skip {skip} over the spec's {bounds[2]}; split the query"
                )
        return list(items.values())
