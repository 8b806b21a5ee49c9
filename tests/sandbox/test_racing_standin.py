"""The Racing API stand-in answers as the provider's OpenAPI 1.4.3 spec says, quirks included.

Every response is checked against ``specs/theracingapi-openapi-1.4.3.yml`` with openapi-core,
over real HTTP on loopback.
"""

from __future__ import annotations

import functools
import json
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from openapi_core import Config, OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from openapi_core.testing import MockResponse

from paceline.sandbox.base import Knobs, ManualClock, serve
from paceline.sandbox.racing_api import RacingApiStandIn, build

# The Racing API's published OpenAPI spec, vendored in specs/ so that the stand-in is checked against it.
SPEC_PATH = Path(__file__).resolve().parents[2] / "specs" / "theracingapi-openapi-1.4.3.yml"
TODAY = date(2024, 2, 10)
# January 2023 straddles the first racecard date (2023-01-23); January 2024 is a full month.
WINDOWS = [(date(2023, 1, 1), date(2023, 2, 28)), (date(2024, 1, 1), date(2024, 2, 17))]
JAN_2024 = [date(2024, 1, 1) + timedelta(days=i) for i in range(31)]
ID_PREFIXES = {
    "race_id": "rac_", "course_id": "crs_", "horse_id": "hrs_", "jockey_id": "jky_", "trainer_id": "trn_",
    "owner_id": "own_", "sire_id": "sir_", "dam_id": "dam_", "damsire_id": "dsi_",
}  # fmt: skip


@functools.lru_cache(maxsize=1)
def spec() -> OpenAPI:
    with SPEC_PATH.open() as f:
        data = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    # The spec names the production host; a relative server lets it match the loopback stand-in.
    data["servers"] = [{"url": "/"}]
    return OpenAPI.from_dict(data, config=Config(spec_validator_cls=None))


def _null_positions_to_strings(body: Any) -> tuple[Any, int]:
    races = body.get("results") if isinstance(body, dict) and "results" in body else [body]
    patched = 0
    for race in races or []:
        for runner in race.get("runners", []) if isinstance(race, dict) else []:
            if runner.get("position", "") is None:
                runner["position"] = ""
                patched += 1
    return body, patched


def assert_matches_spec(response: requests.Response) -> None:
    """The response validates against the spec; a withdrawn runner's null position is the one
    known deviation (real payloads have it, the spec says string), so such bodies must validate
    once those nulls are strings."""
    api = spec()
    request = RequestsOpenAPIRequest(response.request)
    errors = list(api.iter_response_errors(request, RequestsOpenAPIResponse(response)))
    if not errors:
        return
    body, patched = _null_positions_to_strings(response.json())
    assert patched, f"{response.request.url} does not match the spec: {errors[0]}"
    mock = MockResponse(
        json.dumps(body).encode(), status_code=response.status_code, content_type="application/json"
    )
    api.validate_response(request, mock)


@pytest.fixture(scope="module")
def standin() -> RacingApiStandIn:
    return build("small", seed=7, knobs=Knobs(throttle_mode="off"), windows=WINDOWS, today=TODAY)


@pytest.fixture(scope="module")
def server(standin: RacingApiStandIn):
    running = serve(standin)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api(standin: RacingApiStandIn, server) -> Any:
    session = requests.Session()
    credential = standin.credentials()[0]
    session.auth = (credential["login"], credential["password"])

    def get(path: str, **params: Any) -> requests.Response:
        return session.get(server.url + path, params=params, timeout=10)

    get.url = server.url  # type: ignore[attr-defined]
    yield get
    session.close()


def _racing_day(standin: RacingApiStandIn, days: list[date]) -> date:
    return next(d for d in days if standin.results_for(d))


# -- shapes --------------------------------------------------------------------------------
def test_regions_and_courses_match_spec(api: Any, standin: RacingApiStandIn) -> None:
    regions = api("/v1/courses/regions")
    assert regions.status_code == 200
    assert_matches_spec(regions)
    assert {"region": "Great Britain", "region_code": "gb"} in regions.json()
    assert regions.json() == standin.regions()

    courses = api("/v1/courses", region_codes=["gb", "ire"])
    assert courses.status_code == 200
    assert_matches_spec(courses)
    body = courses.json()
    assert body["total"] == len(body["courses"]) >= 20
    assert {c["region_code"] for c in body["courses"]} == {"gb", "ire"}
    assert all(c["id"].startswith("crs_") for c in body["courses"])
    only_ire = api("/v1/courses", region_codes="ire").json()["courses"]
    assert only_ire == standin.courses(["ire"]) and {c["region"] for c in only_ire} == {"Ireland"}


def test_racecards_pro_match_spec(api: Any, standin: RacingApiStandIn) -> None:
    day = _racing_day(standin, JAN_2024)
    response = api("/v1/racecards/pro", date=day.isoformat(), region_codes=["gb", "ire"])
    assert response.status_code == 200
    assert_matches_spec(response)
    body = response.json()
    assert body["racecards"] == standin.racecards_for(day)
    assert body["total"] == len(body["racecards"]) and body["limit"] == 500 and body["skip"] == 0
    assert body["query"] == [["date", day.isoformat()], ["region_codes", "gb"], ["region_codes", "ire"]]
    runner = next(r for card in body["racecards"] for r in card["runners"] if r["odds"])
    assert {"bookmaker", "fractional", "decimal", "ew_places", "ew_denom", "updated", "history"} <= set(
        runner["odds"][0]
    )


def test_results_list_single_and_404_match_spec(api: Any, standin: RacingApiStandIn) -> None:
    response = api("/v1/results", start_date="2024-01-01", end_date="2024-01-31", limit=100)
    assert response.status_code == 200
    assert_matches_spec(response)
    body = response.json()
    assert body["total"] == sum(len(standin.results_for(d)) for d in JAN_2024) > 0
    assert body["query"] == [["start_date", "2024-01-01"], ["end_date", "2024-01-31"], ["limit", 100]]

    race = body["results"][0]
    single = api(f"/v1/results/{race['race_id']}")
    assert single.status_code == 200
    assert_matches_spec(single)
    assert single.json() == race

    for unknown in ("rac_1", "rac_99999999999", "nonsense"):
        missing = api(f"/v1/results/{unknown}")
        assert missing.status_code == 404
        assert_matches_spec(missing)
    future = standin.racecards_for(TODAY + timedelta(days=3))
    assert future, "the window has racecards ahead of 'today'"
    assert api(f"/v1/results/{future[0]['race_id']}").status_code == 404  # not run yet


def test_spec_validation_is_not_vacuous(api: Any) -> None:
    response = api("/v1/results", start_date="2024-01-05", end_date="2024-01-05", limit=1)
    request = RequestsOpenAPIRequest(response.request)
    for breakage in ({"total": "1"}, {"results": [{"race_id": 1}]}, {"query": None}):
        body = {**response.json(), **breakage}
        mock = MockResponse(json.dumps(body).encode(), status_code=200, content_type="application/json")
        assert list(spec().iter_response_errors(request, mock)), breakage


def test_422_bodies_are_pydantic_v2_and_match_spec(api: Any) -> None:
    over = api("/v1/results", limit=101)
    assert over.status_code == 422
    assert_matches_spec(over)
    assert over.json() == {
        "detail": [
            {
                "type": "less_than_equal",
                "loc": ["query", "limit"],
                "msg": "Input should be less than or equal to 100",
                "input": "101",
                "ctx": {"le": 100},
            }
        ]
    }
    several = api("/v1/results", limit=0, skip=20001)
    assert several.status_code == 422
    assert_matches_spec(several)
    assert [(e["loc"], e["type"]) for e in several.json()["detail"]] == [
        (["query", "limit"], "greater_than_equal"),
        (["query", "skip"], "less_than_equal"),
    ]
    for path, params, loc in [
        ("/v1/results", {"limit": "abc"}, ["query", "limit"]),
        ("/v1/results", {"start_date": "2024/01/01"}, ["query", "start_date"]),
        ("/v1/results", {"start_date": "2024-02-01", "end_date": "2024-01-01"}, ["query", "start_date"]),
        ("/v1/racecards/pro", {"limit": 501}, ["query", "limit"]),
        ("/v1/racecards/pro", {"skip": 501}, ["query", "skip"]),
        ("/v1/racecards/pro", {"date": "tomorrow"}, ["query", "date"]),
    ]:
        response = api(path, **params)
        assert response.status_code == 422, (path, params)
        assert_matches_spec(response)
        assert response.json()["detail"][0]["loc"] == loc


def test_results_range_over_365_days_is_422(api: Any) -> None:
    too_long = api("/v1/results", start_date="2023-01-01", end_date="2024-01-02")
    assert too_long.status_code == 422
    assert_matches_spec(too_long)
    assert too_long.json()["detail"][0]["loc"] == ["query", "end_date"]
    assert "365 days" in too_long.json()["detail"][0]["msg"]
    assert api("/v1/results", start_date="2023-01-01", end_date="2024-01-01", limit=1).status_code == 200
    # Without end_date the range ends today: a start_date over 365 days back is then too long.
    assert api("/v1/results", start_date="2023-01-01").status_code == 422


def test_401_without_or_with_wrong_credentials(api: Any) -> None:
    # The spec declares no 401; FastAPI's HTTPBasic answers these bodies.
    bare = requests.get(api.url + "/v1/results", timeout=10)
    assert bare.status_code == 401
    assert bare.json() == {"detail": "Not authenticated"}
    assert bare.headers["WWW-Authenticate"] == "Basic"
    wrong = requests.get(api.url + "/v1/courses/regions", auth=("paceline", "nope"), timeout=10)
    assert wrong.status_code == 401
    assert wrong.json() == {"detail": "Incorrect username or password"}
    assert wrong.headers["WWW-Authenticate"] == "Basic"


# -- paging and parameters ----------------------------------------------------------------------
def test_skip_paging_until_total_returns_every_result_once_in_order(
    api: Any, standin: RacingApiStandIn
) -> None:
    expected = [r["race_id"] for d in JAN_2024 for r in standin.results_for(d)]
    seen: list[str] = []
    skip, total = 0, None
    while total is None or skip < total:
        body = api("/v1/results", start_date="2024-01-01", end_date="2024-01-31", limit=7, skip=skip).json()
        total = body["total"] if total is None else total
        assert body["total"] == total and body["limit"] == 7 and body["skip"] == skip
        seen += [r["race_id"] for r in body["results"]]
        skip += 7
    assert seen == expected
    page = api("/v1/results", start_date="2024-01-01", end_date="2024-01-31", limit=7, skip=total).json()
    assert page["results"] == [] and page["total"] == total
    # Sorted by date, then off_dt.
    races = [r for d in JAN_2024 for r in standin.results_for(d)]
    assert [(r["date"], r["off_dt"]) for r in races] == sorted((r["date"], r["off_dt"]) for r in races)


def test_region_on_results_region_codes_on_racecards(api: Any, standin: RacingApiStandIn) -> None:
    params = {"start_date": "2024-01-01", "end_date": "2024-01-31", "limit": 100}
    everything = api("/v1/results", **params).json()
    gb = api("/v1/results", region="gb", **params).json()
    ire = api("/v1/results", region="ire", **params).json()
    assert {r["region"] for r in gb["results"]} == {"GB"} and {r["region"] for r in ire["results"]} == {"IRE"}
    assert gb["total"] + ire["total"] == everything["total"]
    both = api("/v1/results", region=["gb", "ire"], **params).json()
    assert both["total"] == everything["total"]
    # Unknown parameters are ignored (FastAPI): region_codes on /v1/results filters nothing.
    assert api("/v1/results", region_codes="gb", **params).json()["total"] == everything["total"]
    # Query codes are lowercase; uppercase matches nothing.
    assert api("/v1/results", region="GB", **params).json()["total"] == 0
    # course overrides region.
    course_id = ire["results"][0]["course_id"]
    by_course = api("/v1/results", course=course_id, region="gb", **params).json()
    assert by_course["total"] > 0 and {r["course_id"] for r in by_course["results"]} == {course_id}

    day = next(d for d in JAN_2024 if {r["region"] for r in standin.racecards_for(d)} == {"GB", "IRE"})
    cards_ire = api("/v1/racecards/pro", date=day.isoformat(), region_codes="ire").json()
    assert cards_ire["total"] > 0 and {c["region"] for c in cards_ire["racecards"]} == {"IRE"}
    ignored = api("/v1/racecards/pro", date=day.isoformat(), region="ire").json()
    assert ignored["total"] == len(standin.racecards_for(day))
    by_ids = api("/v1/racecards/pro", date=day.isoformat(), course_ids=course_id, region_codes="gb").json()
    assert {c["course_id"] for c in by_ids["racecards"]} <= {course_id}


def test_racecards_only_from_2023_01_23_and_one_week_ahead(api: Any, standin: RacingApiStandIn) -> None:
    before = _racing_day(standin, [date(2023, 1, 22) - timedelta(days=i) for i in range(20)])
    assert standin.results_for(before), "results exist for that day"
    early = api("/v1/racecards/pro", date=before.isoformat())
    assert early.status_code == 200 and early.json()["racecards"] == [] and early.json()["total"] == 0
    assert_matches_spec(early)
    first = _racing_day(standin, [date(2023, 1, 23) + timedelta(days=i) for i in range(20)])
    assert api("/v1/racecards/pro", date=first.isoformat()).json()["total"] > 0
    week = [TODAY + timedelta(days=i) for i in range(8)]
    ahead = next(d for d in reversed(week) if standin.racecards_for(d))
    assert api("/v1/racecards/pro", date=ahead.isoformat()).json()["total"] > 0
    assert api("/v1/racecards/pro", date=(TODAY + timedelta(days=8)).isoformat()).json()["total"] == 0
    # Without a date: today's cards.
    assert api("/v1/racecards/pro").json()["racecards"] == standin.racecards_for(TODAY)
    # No results for the future.
    assert api("/v1/results", start_date=ahead.isoformat(), end_date=ahead.isoformat()).json()["total"] == 0


# -- the data ----------------------------------------------------------------------------------
def test_empty_days(api: Any, standin: RacingApiStandIn) -> None:
    empty = standin.empty_days(date(2024, 1, 1), date(2024, 1, 31))
    assert empty and len(empty) < 31
    day = empty[0].isoformat()
    assert api("/v1/results", start_date=day, end_date=day).json()["total"] == 0
    assert api("/v1/racecards/pro", date=day).json()["total"] == 0
    # Outside the small scale's windows there are no meetings.
    assert standin.empty_days(date(2020, 5, 1), date(2020, 5, 3)) == [
        date(2020, 5, 1),
        date(2020, 5, 2),
        date(2020, 5, 3),
    ]
    seed = build("seed", seed=7, today=TODAY)
    december = seed.empty_days(date(2023, 12, 20), date(2023, 12, 31))
    assert date(2023, 12, 24) in december and date(2023, 12, 25) in december


def test_abandoned_races_and_non_finishers(api: Any, standin: RacingApiStandIn) -> None:
    cards = {c["race_id"]: c for d in JAN_2024 for c in standin.racecards_for(d)}
    results = {r["race_id"]: r for d in JAN_2024 for r in standin.results_for(d)}
    abandoned = [rid for rid, card in cards.items() if card["is_abandoned"]]
    assert abandoned
    for rid in abandoned:
        runners = results[rid]["runners"]
        assert not runners or all(r["position"] is None for r in runners)
        served = api(f"/v1/results/{rid}")
        assert served.status_code == 200 and served.json() == results[rid]
    positions = {r["position"] for race in results.values() for r in race["runners"]}
    assert {"F", "PU", "UR", None} <= positions
    late = next(
        race for race in results.values()
        if any(r["position"] is None for r in race["runners"]) and any(r["position"] == "1" for r in race["runners"])
    )  # fmt: skip
    withdrawn = next(r for r in late["runners"] if r["position"] is None)
    assert withdrawn["horse"] in late["non_runners"]


def test_withdrawn_position_can_follow_the_spec(api: Any, standin: RacingApiStandIn) -> None:
    try:
        assert standin.mutate("set", {"withdrawn_position_null": False})
        response = api("/v1/results", start_date="2024-01-01", end_date="2024-01-31", limit=100)
        positions = {r["position"] for race in response.json()["results"] for r in race["runners"]}
        assert None not in positions and "" in positions
        spec().validate_response(RequestsOpenAPIRequest(response.request), RequestsOpenAPIResponse(response))
    finally:
        standin.mutate("set", {"withdrawn_position_null": True})


def test_payload_conventions(standin: RacingApiStandIn) -> None:
    off_time = re.compile(r"^(1[0-2]|[1-9]):[0-5]\d$")
    off_dt = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:00\+0[01]:00$")

    def scalars(obj: Any, path: str = "") -> list[tuple[str, Any]]:
        if isinstance(obj, dict):
            return [x for k, v in obj.items() for x in scalars(v, k)]
        if isinstance(obj, list):
            return [x for v in obj for x in scalars(v, path)]
        return [(path, obj)]

    for day in JAN_2024[:10]:
        for card in standin.racecards_for(day):
            assert off_time.match(card["off_time"]) and off_dt.match(card["off_dt"])
            assert card["region"] in ("GB", "IRE")
            for key, value in scalars(card):
                assert isinstance(value, str) or key in ("big_race", "is_abandoned"), (key, value)
                if key in ID_PREFIXES:
                    assert value.startswith(ID_PREFIXES[key]), (key, value)
        for race in standin.results_for(day):
            assert off_time.match(race["off"]) and race["region"] in ("GB", "IRE")
            for key, value in scalars(race):
                assert isinstance(value, str) or (key == "position" and value is None), (key, value)
                if key in ID_PREFIXES:
                    assert value.startswith(ID_PREFIXES[key]), (key, value)


def test_masters_repeat_with_consistent_pedigree_and_bookmakers_only_in_odds(
    standin: RacingApiStandIn,
) -> None:
    pedigree: dict[str, tuple[str, str, str]] = {}
    dam_sire: dict[str, str] = {}
    appearances: dict[str, int] = {}
    bookmakers: set[str] = set()
    for day in JAN_2024:
        for card in standin.racecards_for(day):
            for r in card["runners"]:
                key = (r["sire_id"], r["dam_id"], r["damsire_id"])
                assert pedigree.setdefault(r["horse_id"], key) == key
                assert dam_sire.setdefault(r["dam_id"], r["damsire_id"]) == r["damsire_id"]
                appearances[r["horse_id"]] = appearances.get(r["horse_id"], 0) + 1
                bookmakers |= {o["bookmaker"] for o in r["odds"]}
        for race in standin.results_for(day):
            for r in race["runners"]:
                assert pedigree[r["horse_id"]] == (r["sire_id"], r["dam_id"], r["damsire_id"])
    assert max(appearances.values()) > 1, "horses run more than once"
    assert bookmakers and bookmakers <= set(standin.bookmakers())


def test_determinism_per_seed() -> None:
    a, b, c = (build("small", seed=s, windows=WINDOWS, today=TODAY) for s in (7, 7, 8))
    day = date(2024, 1, 5)
    assert a.results_for(day) == b.results_for(day) and a.racecards_for(day) == b.racecards_for(day)
    assert a.empty_days(JAN_2024[0], JAN_2024[-1]) == b.empty_days(JAN_2024[0], JAN_2024[-1])
    assert [a.results_for(d) for d in JAN_2024] != [c.results_for(d) for d in JAN_2024]
    # Evicted days regenerate identically.
    a.data.clear_cache()
    assert a.results_for(day) == b.results_for(day)


def test_seed_scale_volume() -> None:
    seed = build("seed", seed=7, today=TODAY)
    week = [date(2023, 6, 5) + timedelta(days=i) for i in range(7)]
    per_day = [len(seed.results_for(d)) for d in week if not seed.data.is_empty(d)]
    assert per_day and all(8 <= n <= 22 for n in per_day), per_day
    assert 10 <= sum(per_day) / len(per_day) <= 16
    runners = [len(c["runners"]) for d in week for c in seed.racecards_for(d)]
    assert min(runners) >= 8 and max(runners) <= 12


# -- mutations and knobs -------------------------------------------------------------------------
def test_mutate_add_results_and_set_day_empty(api: Any, standin: RacingApiStandIn) -> None:
    day = date(2024, 1, 20)
    before = api("/v1/results", start_date=day.isoformat(), end_date=day.isoformat()).json()["total"]
    added = requests.post(
        api.url + "/_control/mutate",
        json={"action": "add_results", "date": day.isoformat(), "n": 12},
        timeout=10,
    )
    assert added.status_code == 200
    new_ids = added.json()["result"]
    assert len(new_ids) == 12 and len(set(new_ids)) == 12
    after = api("/v1/results", start_date=day.isoformat(), end_date=day.isoformat(), limit=100).json()
    assert after["total"] == before + 12
    assert set(new_ids) <= {r["race_id"] for r in after["results"]}
    assert {r["race_id"] for r in standin.results_for(day)} == {r["race_id"] for r in after["results"]}
    single = api(f"/v1/results/{new_ids[0]}")
    assert single.status_code == 200 and single.json()["runners"]
    assert_matches_spec(single)
    assert new_ids[0] in {c["race_id"] for c in standin.racecards_for(day)}

    emptied = requests.post(
        api.url + "/_control/mutate", json={"action": "set_day_empty", "date": day.isoformat()}, timeout=10
    )
    assert emptied.status_code == 200
    assert api("/v1/results", start_date=day.isoformat(), end_date=day.isoformat()).json()["total"] == 0
    assert day in standin.empty_days(day, day)
    bad = requests.post(api.url + "/_control/mutate", json={"action": "nope"}, timeout=10)
    assert bad.status_code == 400


def test_two_per_second_throttle_is_429_without_retry_after() -> None:
    standin = build("small", seed=7, windows=WINDOWS, today=TODAY)
    assert standin.knobs.per_second == 2
    clock = standin.clock = ManualClock()  # the window moves only when the test says: a busy machine cannot widen it
    running = serve(standin)
    try:
        first, second = standin.credentials()[:2]
        auth1, auth2 = (first["login"], first["password"]), (second["login"], second["password"])
        url = running.url + "/v1/courses/regions"
        with requests.Session() as s:
            statuses = [s.get(url, auth=auth1, timeout=10) for _ in range(3)]
            other = s.get(url, auth=auth2, timeout=10)
        assert [r.status_code for r in statuses[:2]] == [200, 200]
        throttled = statuses[2]
        assert throttled.status_code == 429
        assert throttled.json() == {"detail": "Too Many Requests"}
        assert "Retry-After" not in throttled.headers
        assert other.status_code == 200, "the quota is per credential"
        stats = requests.get(running.url + "/_control/stats", timeout=10).json()
        assert stats["throttles"] == {first["login"]: 1}
        clock.advance(1.05)
        assert requests.get(url, auth=auth1, timeout=10).status_code == 200
    finally:
        running.stop()


def test_soft_throttle_answers_200_with_null_total() -> None:
    # Two calls per (scaled) hour, an hour being a minute: the third call is throttled however slow CI is.
    knobs = Knobs(per_hour=2, time_scale=60 / 3600)
    standin = build("small", seed=7, knobs=knobs, windows=WINDOWS, today=TODAY)
    running = serve(standin)
    try:
        set_rate = requests.post(
            running.url + "/_control/mutate", json={"action": "set", "soft_throttle_rate": 1.0}, timeout=10
        )
        assert set_rate.status_code == 200 and standin.knobs.soft_throttle_rate == 1.0
        credential = standin.credentials()[0]
        with requests.Session() as s:
            s.auth = (credential["login"], credential["password"])
            params = {"start_date": "2024-01-05", "end_date": "2024-01-05", "limit": 10}
            answers = [s.get(running.url + "/v1/results", params=params, timeout=10) for _ in range(3)]
            cards = s.get(running.url + "/v1/racecards/pro", params={"date": "2024-01-05"}, timeout=10)
            single = s.get(running.url + "/v1/results/rac_18770000", timeout=10)
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert answers[0].json()["total"] > 0
        soft = answers[2].json()
        assert soft["results"] == [] and soft["total"] is None and soft["limit"] == 10 and soft["skip"] == 0
        assert cards.status_code == 200 and cards.json()["racecards"] == [] and cards.json()["total"] is None
        assert single.status_code == 429, "a single race cannot be answered empty"
        # Also settable as a knob.
        knobs = requests.post(running.url + "/_control/knobs", json={"soft_throttle_rate": 0.0}, timeout=10)
        assert knobs.status_code == 200 and standin.knobs.soft_throttle_rate == 0.0
    finally:
        running.stop()


def test_count_driven_quirks_apply_to_the_next_n_answers_only() -> None:
    standin = build("small", seed=7, knobs=Knobs(throttle_mode="off"), windows=WINDOWS, today=TODAY)
    running = serve(standin)
    day = next(d for d in JAN_2024 if len(standin.results_for(d)) >= 3)
    credential = standin.credentials()[0]

    def quirk(**counts: int) -> requests.Response:
        return requests.post(running.url + "/_control/mutate", json={"action": "quirk", **counts}, timeout=10)

    try:
        with requests.Session() as s:
            s.auth = (credential["login"], credential["password"])

            def page(skip: int) -> dict[str, Any]:
                params = {"start_date": day.isoformat(), "end_date": day.isoformat(), "limit": 1, "skip": skip}
                return s.get(running.url + "/v1/results", params=params, timeout=10).json()

            total = len(standin.results_for(day))
            # Empty pages: only at skip >= 1, only before total, and only the next 2 of them.
            assert quirk(empty_pages=2, empty_pages_min_skip=1).json()["result"]["empty_pages"] == 2
            assert len(page(0)["results"]) == 1
            assert [(p["results"], p["total"]) for p in (page(1), page(1))] == [([], total), ([], total)]
            assert len(page(1)["results"]) == 1
            assert page(total)["results"] == []  # past the end: a genuine empty page, no quirk spent

            # Records without an id: the next 2 records served, across pages.
            quirk(records_without_id=2)
            served = [page(i)["results"][0] for i in range(3)]
            assert ["race_id" in r for r in served] == [False, False, True]
            assert served[0] == {k: v for k, v in standin.results_for(day)[0].items() if k != "race_id"}

            # A forced status for the next call only.
            quirk(status_calls=1, status=403)
            regions = running.url + "/v1/courses/regions"
            assert [s.get(regions, timeout=10).status_code for _ in range(2)] == [403, 200]
        assert quirk(nope=1).status_code == 400
        assert quirk(empty_pages=-1).status_code == 400
        stats = standin.stats()
        assert stats["quirks"]["empty_pages"] == 0 and stats["quirks"]["status_calls"] == 0
        assert stats["arrivals"][credential["login"]]["calls"] == 10
    finally:
        running.stop()


def test_arrival_stats_report_the_tightest_window() -> None:
    standin = build("small", seed=7, knobs=Knobs(per_second=2.0), windows=WINDOWS, today=TODAY)
    running = serve(standin)
    credential = standin.credentials()[0]
    try:
        with requests.Session() as s:
            s.auth = (credential["login"], credential["password"])
            statuses = [s.get(running.url + "/v1/courses/regions", timeout=10).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        arrivals = standin.stats()["arrivals"][credential["login"]]
        # three calls (one throttled) well inside a second: the tightest window of 3 is under 1 s
        assert arrivals["calls"] == 3 and 0 <= arrivals["tightest_window_s"] < 1.0
        assert arrivals["span_s"] == arrivals["tightest_window_s"]
    finally:
        running.stop()
