"""Local stand-in of The Racing API (api.theracingapi.com), OpenAPI 1.4.3.

Endpoints (HTTP Basic auth on all of them), answered as the spec's schemas say:

- ``GET /v1/courses/regions``: ``[Region]``;
- ``GET /v1/courses?region_codes=gb&region_codes=ire``: ``CoursesPage``;
- ``GET /v1/racecards/pro?date=&region_codes=&course_ids=&limit=&skip=``: ``RacecardsOddsProPage``;
- ``GET /v1/results?start_date=&end_date=&region=&course=&type=&going=&race_class=&min_distance_y=
  &max_distance_y=&age_band=&sex_restriction=&limit=&skip=``: ``ResultsStandardPage``;
- ``GET /v1/results/{race_id}``: ``ResultStandard``, 404 when unknown.

Behaviour choices where the provider documents nothing (see
docs/providers.md):

- Racecards for a date before 2023-01-23 or more than 7 days ahead answer 200 with an empty
  page (``total`` 0): the docs describe data availability, not an error. A malformed date is a 422.
- Results: a range over 365 days, ``start_date`` after ``end_date`` or a malformed date is a 422
  ``HTTPValidationError``; so is any ``limit`` / ``skip`` outside the spec's bounds. A negative
  ``skip`` (the spec sets no minimum) counts as 0. The stand-in has the historical-results
  add-on (results back to 1988); ``historical_addon = False`` makes a ``start_date`` more than
  365 days back a 422.
- Results exist for past days, and for today for the races already off; never for the future.
- Region / course codes in queries are matched exactly (lowercase ``gb``, ``ire``), as
  payloads carry uppercase regions. Unknown query parameters are ignored, as FastAPI does: a
  client sending ``region_codes`` to ``/v1/results`` gets every region back.
- Pages are sorted by date, then ``off_dt``, then course.
- Throttle: ``per_second`` calls per credential (2 by default) then 429
  ``{"detail": "Too Many Requests"}`` with no ``Retry-After``; with ``knobs.soft_throttle_rate``
  that share of throttled list calls is answered 200 with an empty page and ``"total": null``
  (the "soft throttle" seen on the real API).
- Faults driven by counts (``POST /_control/mutate {"action": "quirk", ...}``, see
  :class:`Quirks`): the next N list pages answered empty while ``total`` says more remain (the
  API's empty 200 under load), the next N list records served without their ``race_id``, the
  next N calls answered with a given HTTP status (401 for a revoked key, 403 for a plan without
  the endpoint).
- ``stats()`` adds, per credential, the arrival time span and the tightest window of
  ``per_second`` calls plus one (the one the provider would have throttled if under a second),
  so a benchmark can show how close to the limit it ran.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
import statistics
import time
from collections import deque
from dataclasses import asdict, dataclass, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any

from paceline.sandbox.base import Knobs, Request, Response, StandIn
from paceline.sandbox.racing_data import (
    COURSES,
    RACECARDS_AHEAD_DAYS,
    RACECARDS_FROM,
    REGIONS,
    Race,
    RacingData,
)

RESULTS_MAX_RANGE_DAYS = 365
RESULTS_HISTORY_DAYS = 365  # without the historical-results add-on
RESULTS_EARLIEST = date(1988, 1, 1)
_INT_RE = re.compile(r"^\s*[+-]?\d+\s*$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_WWW_AUTH = {"WWW-Authenticate": "Basic"}
_LIST_KEYS = {"/v1/racecards/pro": "racecards", "/v1/results": "results", "/v1/courses": "courses"}
# Attributes the "set" mutation may change (knob names go to self.knobs).
_SETTABLE = {"today", "withdrawn_position_null", "historical_addon"}
_STATUS_BODIES = {
    401: {"detail": "Incorrect username or password"},
    403: {"detail": "Not authorised to access this endpoint"},
}


@dataclass
class Quirks:
    """Faults driven by counts: each applies to the next N matching answers, then stops."""

    empty_pages: int = 0  # list pages answered 200 with no items although `total` says more remain
    empty_pages_min_skip: int = 0  # ...only pages asked at this skip or later (0: the first page too)
    records_without_id: int = 0  # list records (racecards, results) served without their race_id
    status_calls: int = 0  # calls answered with HTTP `status` instead of their data
    status: int = 401

    def update(self, values: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown quirks {sorted(unknown)}; known: {sorted(names)}")
        for key, value in values.items():
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"quirk {key} must be a whole number >= 0, not {value!r}")
            setattr(self, key, value)


WINDOWS_KEPT = 100_000


class _ArrivalLog:
    """One credential's arrivals in brief: count, first and last, and the tightest window of
    `limit` + 1 consecutive calls (>= 1 s: no second ever held more than `limit` calls)."""

    def __init__(self) -> None:
        self.calls = 0
        self.first: float | None = None
        self.last: float | None = None
        self.tightest: float | None = None
        self.recent: deque[float] = deque()
        self.windows: list[float] = []  # the first WINDOWS_KEPT, for the median

    def add(self, now: float, limit: int) -> None:
        self.calls += 1
        self.first = now if self.first is None else self.first
        self.last = now
        if limit <= 0:
            return
        self.recent.append(now)
        while len(self.recent) > limit + 1:
            self.recent.popleft()
        if len(self.recent) == limit + 1:
            window = now - self.recent[0]
            self.tightest = window if self.tightest is None else min(self.tightest, window)
            if len(self.windows) < WINDOWS_KEPT:
                self.windows.append(window)

    def summary(self) -> dict[str, Any]:
        span = (self.last - self.first) if self.first is not None and self.last is not None else 0.0
        return {
            "calls": self.calls,
            "span_s": round(span, 4),
            "tightest_window_s": None if self.tightest is None else round(self.tightest, 4),
            "median_window_s": round(statistics.median(self.windows), 4) if self.windows else None,
        }


class ValidationFailed(Exception):
    """Collected 422 errors of one request, pydantic-v2 shaped."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self.errors = errors


def _error(name: str, type_: str, msg: str, value: Any, ctx: dict[str, Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": type_, "loc": ["query", name], "msg": msg, "input": value}
    if ctx is not None:
        error["ctx"] = ctx
    return error


class _Params:
    """Query parsing with FastAPI/pydantic-v2 style error collection."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.errors: list[dict[str, Any]] = []

    def int(self, name: str, default: int, ge: int | None = None, le: int | None = None) -> int:
        raw = self.request.arg(name)
        if raw is None:
            return default
        if not _INT_RE.match(raw):
            self.errors.append(
                _error(
                    name,
                    "int_parsing",
                    "Input should be a valid integer, unable to parse string as an integer",
                    raw,
                )
            )
            return default
        value = int(raw)
        if ge is not None and value < ge:
            self.errors.append(
                _error(
                    name,
                    "greater_than_equal",
                    f"Input should be greater than or equal to {ge}",
                    raw,
                    {"ge": ge},
                )
            )
        elif le is not None and value > le:
            self.errors.append(
                _error(
                    name, "less_than_equal", f"Input should be less than or equal to {le}", raw, {"le": le}
                )
            )
        return value

    def optional_int(self, name: str) -> int | None:
        if self.request.arg(name) is None:
            return None
        return self.int(name, 0)

    def date(self, name: str, default: date) -> date:
        raw = self.request.arg(name)
        if raw is None:
            return default
        try:
            if not _DATE_RE.match(raw):
                raise ValueError
            return date.fromisoformat(raw)
        except ValueError:
            self.value_error(name, "Invalid date format, expected YYYY-MM-DD", raw)
            return default

    def value_error(self, name: str, message: str, value: Any) -> None:
        self.errors.append(_error(name, "value_error", f"Value error, {message}", value, {"error": {}}))

    def raise_if_any(self) -> None:
        if self.errors:
            raise ValidationFailed(self.errors)

    def echo(self, names: tuple[str, ...]) -> list[list[Any]]:
        """The envelope's ``query``: the known parameters received, as [name, value] pairs."""
        pairs: list[list[Any]] = []
        for name, values in self.request.query.items():
            if name not in names:
                continue
            for value in values:
                pairs.append(
                    [name, int(value) if name in ("limit", "skip") and _INT_RE.match(value) else value]
                )
        return pairs


class RacingApiStandIn(StandIn):
    """The Racing API, served from :class:`RacingData`; see the module docstring."""

    name = "racing_api"

    def __init__(
        self,
        scale: str = "small",
        seed: int = 7,
        knobs: Knobs | None = None,
        windows: list[tuple[date, date]] | None = None,
        today: date | None = None,
        credentials: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(knobs or Knobs(per_second=2.0, seed=seed))
        self.seed = seed
        self._today = today
        if windows is None and scale == "small":
            windows = default_small_windows(today or date.today())
        self.data = RacingData(scale, seed, windows)
        self._credentials = credentials or [
            {"login": "paceline", "password": f"sandbox-{seed}"},
            {"login": "paceline-2", "password": f"sandbox-{seed}-2"},
        ]
        self.historical_addon = True
        self.quirks = Quirks()
        self._arrivals: dict[str, _ArrivalLog] = {}
        self.route("GET", "/v1/courses/regions", self._authed(self._regions), "courses/regions")
        self.route("GET", "/v1/courses", self._authed(self._courses), "courses")
        self.route("GET", "/v1/racecards/pro", self._authed(self._racecards_pro), "racecards/pro")
        self.route("GET", "/v1/results", self._authed(self._results), "results")
        self.route("GET", "/v1/results/{race_id}", self._authed(self._result), "results/{race_id}")

    # -- public ground truth -----------------------------------------------------------------
    @property
    def today(self) -> date:
        return self._today or date.today()

    @property
    def withdrawn_position_null(self) -> bool:
        return self.data.withdrawn_position_null

    @withdrawn_position_null.setter
    def withdrawn_position_null(self, value: bool) -> None:
        if value != self.data.withdrawn_position_null:
            self.data.withdrawn_position_null = bool(value)
            self.data.clear_cache()

    def credentials(self) -> list[dict[str, str]]:
        return [dict(c) for c in self._credentials]

    def regions(self) -> list[dict[str, str]]:
        return [dict(r) for r in REGIONS]

    def courses(self, region_codes: list[str] | None = None) -> list[dict[str, str]]:
        return [c.as_api() for c in COURSES if not region_codes or c.region_code in region_codes]

    def bookmakers(self) -> list[str]:
        """Every bookmaker name that can appear in racecard runners' ``odds[]``."""
        return self.data.bookmakers()

    def racecards_for(self, day: date | str) -> list[dict[str, Any]]:
        """The racecards served for a date (all regions), in served order."""
        day = _as_date(day)
        if not self._racecards_available(day):
            return []
        return [copy.deepcopy(r.racecard) for r in self.data.races(day)]

    def results_for(self, day: date | str) -> list[dict[str, Any]]:
        """The result races served for a date (all regions), in served order."""
        day = _as_date(day)
        return [copy.deepcopy(r.result) for r in self._result_races(day)]

    def empty_days(self, start: date | str, end: date | str) -> list[date]:
        """Days in [start, end] with no meetings at all."""
        start, end = _as_date(start), _as_date(end)
        return [
            start + timedelta(days=i)
            for i in range((end - start).days + 1)
            if self.data.is_empty(start + timedelta(days=i))
        ]

    def warm(self, start: date | str, end: date | str) -> int:
        """Generate the days [start, end] now and keep them cached; returns how many. For a
        benchmark: the real API has its data ready, and generating a seed-scale day on its first
        call (tens of ms on a busy machine) would time the stand-in rather than the client."""
        start, end = _as_date(start), _as_date(end)
        days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
        self.data.keep_days(len(days) + 8)
        for day in days:
            self.data.races(day)
        return len(days)

    # -- mutations -------------------------------------------------------------------------------
    def mutate(self, action: str, payload: dict[str, Any]) -> Any:
        if action == "add_results":
            day, n = _as_date(payload["date"]), int(payload.get("n", 1))
            current = self.data.overlays.extra_results.get(day, 0)
            if n < 1 or current + n > self.data.max_extra_results():
                raise ValueError(f"n must be 1..{self.data.max_extra_results() - current} for {day}")
            before = {r.race_id for r in self.data.races(day)}
            self.data.overlays.extra_results[day] = current + n
            self.data.invalidate(day)
            return [r.race_id for r in self.data.races(day) if r.race_id not in before]
        if action == "set_day_empty":
            day = _as_date(payload["date"])
            self.data.overlays.empty_days.add(day)
            self.data.overlays.extra_results.pop(day, None)
            self.data.invalidate(day)
            return {"date": day.isoformat(), "empty": True}
        if action == "quirk":
            with self.lock:
                self.quirks.update({k: v for k, v in payload.items() if k != "action"})
                return asdict(self.quirks)
        if action == "set":
            values = {k: v for k, v in payload.items() if k != "action"}
            knob_names = set(vars(self.knobs))
            unknown = set(values) - _SETTABLE - knob_names
            if unknown:
                raise ValueError(
                    f"unknown settings {sorted(unknown)}; known: {sorted(_SETTABLE | knob_names)}"
                )
            self.knobs.update({k: v for k, v in values.items() if k in knob_names})
            if "today" in values:
                self._today = _as_date(values["today"]) if values["today"] else None
            if "withdrawn_position_null" in values:
                self.withdrawn_position_null = bool(values["withdrawn_position_null"])
            if "historical_addon" in values:
                self.historical_addon = bool(values["historical_addon"])
            return {k: getattr(self.knobs, k) if k in knob_names else str(getattr(self, k)) for k in values}
        raise ValueError(f"{self.name} supports add_results, set_day_empty, set and quirk, not {action!r}")

    # -- auth and throttling -------------------------------------------------------------------
    def _basic(self, request: Request) -> tuple[str, str] | None:
        header = request.header("authorization") or ""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            return None
        try:
            username, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return (username, password) if sep else None

    def _valid(self, pair: tuple[str, str] | None) -> bool:
        return pair is not None and {"login": pair[0], "password": pair[1]} in self._credentials

    def credential_of(self, request: Request) -> str | None:
        pair = self._basic(request)
        return pair[0] if self._valid(pair) else None

    def _authed(self, handler: Any) -> Any:
        def wrapped(request: Request) -> Response:
            pair = self._basic(request)
            if pair is None:
                return Response(401, {"detail": "Not authenticated"}, dict(_WWW_AUTH))
            if not self._valid(pair):
                return Response(401, {"detail": "Incorrect username or password"}, dict(_WWW_AUTH))
            forced = self._take_quirk("status_calls")
            if forced:
                status = self.quirks.status
                headers = dict(_WWW_AUTH) if status == 401 else {}
                return Response(status, _STATUS_BODIES.get(status, {"detail": f"HTTP {status}"}), headers)
            try:
                return handler(request)
            except ValidationFailed as exc:
                return Response(422, {"detail": exc.errors})

        return wrapped

    def check_quota(self, credential: str, endpoint: str) -> None:
        # Every arrival, admitted or not, as the provider counts them (see stats()).
        now = time.monotonic()
        limit = int(self.knobs.per_second or 0)
        with self.lock:
            log = self._arrivals.setdefault(credential, _ArrivalLog())
            log.add(now, limit)
        super().check_quota(credential, endpoint)

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        with self.lock:
            out["quirks"] = asdict(self.quirks)
            out["arrivals"] = {c: log.summary() for c, log in self._arrivals.items()}
        return out

    def reset_stats(self) -> None:
        super().reset_stats()
        with self.lock:
            self._arrivals.clear()

    def _take_quirk(self, name: str) -> bool:
        """Spend one count of a quirk; whether it applied."""
        with self.lock:
            left = getattr(self.quirks, name)
            if left <= 0:
                return False
            setattr(self.quirks, name, left - 1)
            return True

    def _page_with_quirks(self, items: list[dict[str, Any]], skip: int, total: int) -> list[dict[str, Any]]:
        """A list page as served, after the count-driven quirks (empty page, records without id)."""
        before_total = items and skip < total and skip >= self.quirks.empty_pages_min_skip
        if before_total and self._take_quirk("empty_pages"):
            return []
        served = []
        for item in items:
            if self._take_quirk("records_without_id"):
                item = {k: v for k, v in item.items() if k != "race_id"}
            served.append(item)
        return served

    def throttle_response(self, request: Request) -> Response:
        key = _LIST_KEYS.get(request.path.rstrip("/"))
        with self.lock:
            soft = key is not None and self.rng.random() < self.knobs.soft_throttle_rate
        if soft:
            body: dict[str, Any] = {key: [], "total": None}
            if key != "courses":
                params = _Params(request)
                body.update(
                    limit=params.int("limit", 500 if key == "racecards" else 50), skip=params.int("skip", 0)
                )
                body["query"] = params.echo(tuple(request.query))
            return Response(200, body)
        return Response(429, {"detail": "Too Many Requests"})

    # -- handlers ----------------------------------------------------------------------------------
    def _regions(self, request: Request) -> Response:
        return Response(200, self.regions())

    def _courses(self, request: Request) -> Response:
        courses = self.courses(request.args("region_codes") or None)
        return Response(200, {"courses": courses, "total": len(courses)})

    def _racecards_available(self, day: date) -> bool:
        return RACECARDS_FROM <= day <= self.today + timedelta(days=RACECARDS_AHEAD_DAYS)

    def _racecards_pro(self, request: Request) -> Response:
        p = _Params(request)
        day = p.date("date", self.today)
        limit = p.int("limit", 500, ge=1, le=500)
        skip = max(0, p.int("skip", 0, le=500))
        p.raise_if_any()
        races = self.data.races(day) if self._racecards_available(day) else []
        races = _filter_place(races, request.args("region_codes"), request.args("course_ids"))
        page = self._page_with_quirks([r.racecard for r in races[skip : skip + limit]], skip, len(races))
        query = p.echo(("date", "region_codes", "course_ids", "limit", "skip"))
        return Response(
            200, {"racecards": page, "total": len(races), "limit": limit, "skip": skip, "query": query}
        )

    def _result_races(self, day: date) -> list[Race]:
        today = self.today
        if day > today:
            return []
        races = self.data.races(day)
        if day == today:
            now = datetime.now(UTC)
            races = [r for r in races if r.off_dt <= now]
        return races

    def _results(self, request: Request) -> Response:
        p = _Params(request)
        today = self.today
        end = p.date("end_date", today)
        start = p.date("start_date", today - timedelta(days=RESULTS_MAX_RANGE_DAYS))
        limit = p.int("limit", 50, ge=1, le=100)
        skip = max(0, p.int("skip", 0, le=20000))
        min_y, max_y = p.optional_int("min_distance_y"), p.optional_int("max_distance_y")
        if not p.errors:
            if start > end:
                p.value_error(
                    "start_date", "start_date must be on or before end_date", request.arg("start_date")
                )
            elif (end - start).days > RESULTS_MAX_RANGE_DAYS:
                p.value_error(
                    "end_date",
                    "Maximum range between start and end date is 365 days",
                    request.arg("end_date"),
                )
            elif not self.historical_addon and start < today - timedelta(days=RESULTS_HISTORY_DAYS):
                p.value_error(
                    "start_date", "Limited to up to 365 days in the past", request.arg("start_date")
                )
        p.raise_if_any()
        # Keep only the matching result dicts: a long range at the "seed" scale outgrows the day
        # cache, and holding whole races (racecards too) would cost ~1 MB a day.
        regions, courses = request.args("region"), request.args("course")
        matching: list[tuple[Any, ...]] = []
        day = max(start, RESULTS_EARLIEST)
        while day <= min(end, today):
            for r in _filter_place(self._result_races(day), regions, courses):
                if _result_matches(r.result, request, min_y, max_y):
                    matching.append((r.day, r.off_dt, r.course.name, r.race_id, r.result))
            day += timedelta(days=1)
        matching.sort(key=lambda m: m[:4])
        page = self._page_with_quirks([m[4] for m in matching[skip : skip + limit]], skip, len(matching))
        query = p.echo(
            ("start_date", "end_date", "region", "course", "type", "going", "race_class", "min_distance_y",
             "max_distance_y", "age_band", "sex_restriction", "limit", "skip")
        )  # fmt: skip
        return Response(
            200, {"results": page, "total": len(matching), "limit": limit, "skip": skip, "query": query}
        )

    def _result(self, request: Request) -> Response:
        race = self.data.race(request.path_params["race_id"])
        if race is None or race.race_id not in {r.race_id for r in self._result_races(race.day)}:
            return Response(404, {"detail": "Race not found"})
        return Response(200, race.result)


def _filter_place(races: list[Race], regions: list[str], courses: list[str]) -> list[Race]:
    # "If the course query parameter is specified, [region] will be ignored."
    if courses:
        return [r for r in races if r.course.id in courses]
    if regions:
        return [r for r in races if r.course.region_code in regions]
    return races


def _slug(value: str) -> str:
    return value.lower().replace(" ", "_")


def _result_matches(result: dict[str, Any], request: Request, min_y: int | None, max_y: int | None) -> bool:
    checks = {
        "type": _slug(result["type"]),
        "going": _slug(result["going"]),
        "race_class": _slug(result["class"]),
        "age_band": result["age_band"],
        "sex_restriction": result["sex_rest"],
    }
    for name, value in checks.items():
        wanted = request.args(name)
        if wanted and value not in wanted:
            return False
    yards = int(result["dist_y"])
    return (min_y is None or yards >= min_y) and (max_y is None or yards <= max_y)


def _as_date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def default_small_windows(today: date) -> list[tuple[date, date]]:
    """Days with meetings at the "small" scale: the last 60 days, the next 7, and January 2024."""
    return [
        (today - timedelta(days=60), today + timedelta(days=RACECARDS_AHEAD_DAYS)),
        (date(2024, 1, 1), date(2024, 1, 31)),
    ]


def build(
    scale: str = "small",
    seed: int = 7,
    knobs: Knobs | None = None,
    *,
    windows: list[tuple[date, date]] | None = None,
    today: date | None = None,
) -> RacingApiStandIn:
    """A Racing API stand-in; instant: days are generated on first use.

    ``scale`` "small": meetings only inside ``windows`` (default: the last 60 days, the next 7 and
    January 2024), 2-6 races a day with 4-7 runners. "seed": meetings every day from 2015-01-01
    (bar Christmas Eve/Day and ~1.5% random empty days), 10-15 races a day with 8-12 runners.
    """
    return RacingApiStandIn(scale, seed, knobs, windows=windows, today=today)
