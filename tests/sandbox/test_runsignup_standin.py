"""The RunSignUp stand-in reproduces the quirks of docs/providers.md, RunSignUp, over real HTTP."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
import requests

from paceline.sandbox.base import ManualClock, RunningServer, serve
from paceline.sandbox.runsignup import RunSignUpStandIn, build

REGISTRATION_DATE = re.compile(r"^\d{1,2}/\d{1,2}/\d{4} \d{1,2}:\d{2}$")
SQL_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


class Api:
    """A tiny RunSignUp caller: adds format=json and a key pair unless told otherwise."""

    def __init__(self, server: RunningServer, login: str | None = None, password: str | None = None) -> None:
        self.url = server.url
        self.login = login
        self.password = password
        self.session = requests.Session()

    def get(self, path: str, *, auth: bool = True, fmt: str | None = "json", **params: Any) -> Any:
        if fmt is not None:
            params.setdefault("format", fmt)
        if auth and self.login:
            params.setdefault("api_key", self.login)
            params.setdefault("api_secret", self.password)
        response = self.session.get(self.url + path, params=params, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()


def as_api(server: RunningServer, integration: dict[str, Any]) -> Api:
    return Api(server, integration["login"], integration["password"])


@pytest.fixture(scope="module")
def standin() -> RunSignUpStandIn:
    return build("small", seed=7)


@pytest.fixture(scope="module")
def server(standin: RunSignUpStandIn) -> Iterator[RunningServer]:
    running = serve(standin)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def creds(standin: RunSignUpStandIn) -> list[dict[str, Any]]:
    return standin.integrations()


@pytest.fixture(scope="module")
def big_event(standin: RunSignUpStandIn, creds: list[dict[str, Any]]) -> dict[str, Any]:
    return next(e for e in standin.events_for(creds[0]["login"]) if e["participant_count"] == 2600)


@pytest.fixture
def fresh() -> Iterator[tuple[RunSignUpStandIn, RunningServer]]:
    """A private stand-in for tests that mutate data or knobs."""
    standin = build("small", seed=7)
    running = serve(standin)
    yield standin, running
    running.stop()


def error_code(body: Any) -> int | None:
    return body["error"]["error_code"] if isinstance(body, dict) and "error" in body else None


def active_ids(truth: dict[tuple[int, int, int], dict[str, Any]], event_id: int) -> list[int]:
    return sorted(k[2] for k, v in truth.items() if k[1] == event_id and "removed_reason" not in v)


# -- data --------------------------------------------------------------------------------------
def test_small_world_shape(standin: RunSignUpStandIn, creds: list[dict[str, Any]]) -> None:
    assert [c["integration_id"] for c in creds] == ["runsignup-tp1", "runsignup-tp2"]
    assert [c["conn_id"] for c in creds] == ["runsignup_tp1", "runsignup_tp2"]
    assert all(c["provider"] == "runsignup" and c["extra"] == {} for c in creds)
    first, second = (standin.events_for(c["login"]) for c in creds)
    assert len({e["race_id"] for e in second}) == 2
    counts = [e["participant_count"] for e in first + second]
    assert 0 in counts and 2600 in counts
    days_out = {e["days_out"] for e in first + second}
    assert {1, 10, 40, 100} <= days_out and min(days_out) < 0


def test_unicode_names_and_mixed_bib_types(standin: RunSignUpStandIn, creds: list[dict[str, Any]]) -> None:
    truth = standin.ground_truth(creds[0]["login"])
    names = " ".join(f"{v['user']['first_name']} {v['user']['last_name']}" for v in truth.values())
    for fragment in ("é", "ñ", "ø", "日本"):
        assert fragment in names
    kinds = Counter(type(v["bib_num"]).__name__ for v in truth.values())
    assert {"int", "str", "NoneType"} <= set(kinds)


def test_same_seed_same_data_and_other_seed_differs() -> None:
    day = date(2026, 3, 1)
    one, two, other = build(seed=11, today=day), build(seed=11, today=day), build(seed=12, today=day)
    login = one.integrations()[0]["login"]
    assert login == two.integrations()[0]["login"] != other.integrations()[0]["login"]
    assert one.events_for(login) == two.events_for(login)
    assert one.ground_truth(login) == two.ground_truth(login)
    other_login = other.integrations()[0]["login"]
    assert list(one.ground_truth(login).values())[:50] != list(other.ground_truth(other_login).values())[:50]


def test_seed_scale_builds_lazily() -> None:
    standin = build("seed", seed=7)  # fast because lazy (asserted below), timed in no test
    integrations = standin.integrations()
    assert len(integrations) == 11 and len({i["timing_partner_id"] for i in integrations}) == 11
    events = [e for i in integrations for e in standin.events_for(i["login"])]
    assert 1500 <= len(standin.events) <= 1700
    total = sum(e.count for e in standin.events.values())
    assert 370_000 <= total <= 430_000
    assert len(events) > 1400
    assert not standin._cache  # nothing generated yet
    running = serve(standin)
    try:
        api = as_api(running, integrations[0])
        event = max(standin.events_for(integrations[0]["login"]), key=lambda e: e["participant_count"])
        body = api.get(
            f"/Rest/race/{event['race_id']}/participants", event_id=event["event_id"], results_per_page=2500
        )
        assert len(body[0]["participants"]) == min(2500, event["participant_count"])
    finally:
        running.stop()


# -- routing, format, envelopes -----------------------------------------------------------------
@pytest.mark.parametrize("prefix", ["/Rest", "/rest", "/REST"])
def test_paths_are_case_insensitive(server: RunningServer, creds: list[dict[str, Any]], prefix: str) -> None:
    body = as_api(server, creds[0]).get(f"{prefix}/races")
    assert "races" in body and body["races"]


def test_format_json_required(server: RunningServer, creds: list[dict[str, Any]]) -> None:
    api = as_api(server, creds[0])
    assert error_code(api.get("/Rest/races", fmt=None)) == 10
    assert error_code(api.get("/Rest/races", fmt="xml")) == 10


def test_races_envelope_paging_and_filters(
    server: RunningServer, standin: RunSignUpStandIn, creds: list[dict[str, Any]]
) -> None:
    api = as_api(server, creds[0])
    everything = api.get("/Rest/races", results_per_page=1000)
    assert set(everything) == {"races"}  # no total, no next page
    all_ids = [r["race"]["race_id"] for r in everything["races"]]
    assert len(all_ids) == len(standin.races)  # public races of every partner
    paged: list[int] = []
    for page in range(1, 10):
        chunk = api.get("/Rest/races", page=page, results_per_page=3)["races"]
        paged += [r["race"]["race_id"] for r in chunk]
        if len(chunk) < 3:
            break
    assert paged == all_ids
    own = api.get("/Rest/races", only_partner_races="T", events="T")["races"]
    assert {r["race"]["race_id"] for r in own} == {s.race_id for s in standin.races_of(creds[0]["login"])}
    assert all("events" in r["race"] for r in own)
    assert "events" not in everything["races"][0]["race"]
    upcoming = api.get("/Rest/races", start_date="today", search_start_date_only="T")["races"]
    assert upcoming and all(r["race"]["next_date"] for r in upcoming)
    assert error_code(api.get("/Rest/races", results_per_page=1001)) == 3


def test_race_detail_has_past_events_unless_future_only(
    server: RunningServer, standin: RunSignUpStandIn, creds: list[dict[str, Any]]
) -> None:
    api = as_api(server, creds[1])
    series = next(s for s in standin.races.values() if s.name == "Spring Series")
    race = api.get(f"/rest/race/{series.race_id}")["race"]
    assert len(race["events"]) == 2
    assert race["last_date"] and race["next_date"]
    assert re.match(r"^\d{1,2}/\d{1,2}/\d{4} \d{2}:\d{2}$", race["events"][0]["start_time"])
    future = api.get(f"/rest/race/{series.race_id}", future_events_only="T")["race"]
    assert len(future["events"]) == 1
    # /races?events=T lists only the "most current" events
    listed = api.get("/Rest/races", only_partner_races="T", events="T")["races"]
    assert len(next(r for r in listed if r["race"]["race_id"] == series.race_id)["race"]["events"]) == 1
    assert error_code(api.get("/Rest/race/999999999")) == 201


def test_participants_array_envelope(
    server: RunningServer, standin: RunSignUpStandIn, creds: list[dict[str, Any]]
) -> None:
    api = as_api(server, creds[1])
    race = next(s for s in standin.races.values() if s.name == "Río Grande Trail Run")
    first, second = (ev.event_id for ev in race.events)
    body = api.get(
        f"/Rest/race/{race.race_id}/participants", event_id=f"{second},{first}", results_per_page=2500
    )
    assert isinstance(body, list) and [e["event"]["event_id"] for e in body] == [second, first]
    for element in body:
        assert element["event"]["participants"] == []
        assert element["participants"]
        assert all(p["event_id"] == element["event"]["event_id"] for p in element["participants"])
    record = body[1]["participants"][0]
    assert isinstance(record["last_modified"], int)
    assert REGISTRATION_DATE.match(record["registration_date"])
    assert {"first_name", "last_name", "email", "dob", "gender"} <= set(record["user"])
    assert record["race_fee"].startswith("$")
    assert "question_responses" not in record
    with_questions = api.get(f"/Rest/race/{race.race_id}/participants", event_id=first, include_questions="T")
    assert "question_responses" in with_questions[0]["participants"][0]
    ids = [p["registration_id"] for p in body[1]["participants"]]
    assert ids == sorted(ids)
    truth = standin.ground_truth(creds[1]["login"])
    assert ids == active_ids(truth, first)
    assert error_code(api.get(f"/Rest/race/{race.race_id}/participants", event_id="123")) == 223


def test_empty_event(server: RunningServer, standin: RunSignUpStandIn, creds: list[dict[str, Any]]) -> None:
    empty = next(e for e in standin.events_for(creds[0]["login"]) if e["participant_count"] == 0)
    body = as_api(server, creds[0]).get(
        f"/Rest/race/{empty['race_id']}/participants", event_id=empty["event_id"]
    )
    assert body == [{"event": {"event_id": empty["event_id"], "participants": []}, "participants": []}]


# -- paging and incremental filters ---------------------------------------------------------------
def test_page_boundary_with_after_registration_id(
    server: RunningServer, standin: RunSignUpStandIn, creds: list[dict[str, Any]], big_event: dict[str, Any]
) -> None:
    api = as_api(server, creds[0])
    path = f"/Rest/race/{big_event['race_id']}/participants"
    seen: list[int] = []
    sizes = []
    after = 0
    while True:
        chunk = api.get(
            path,
            event_id=big_event["event_id"],
            results_per_page=2500,
            sort="registration_id ASC",
            after_registration_id=after,
        )[0]["participants"]
        sizes.append(len(chunk))
        if not chunk:
            break
        seen += [p["registration_id"] for p in chunk]
        after = chunk[-1]["registration_id"]
    assert sizes == [2500, 100, 0]
    assert seen == active_ids(standin.ground_truth(creds[0]["login"]), big_event["event_id"])


def test_page_boundary_with_page(
    server: RunningServer, standin: RunSignUpStandIn, creds: list[dict[str, Any]], big_event: dict[str, Any]
) -> None:
    api = as_api(server, creds[0])
    path = f"/Rest/race/{big_event['race_id']}/participants"
    pages = [
        api.get(path, event_id=big_event["event_id"], results_per_page=2500, page=p)[0]["participants"]
        for p in (1, 2, 3)
    ]
    assert [len(p) for p in pages] == [2500, 100, 0]
    ids = [r["registration_id"] for r in pages[0] + pages[1]]
    assert ids == active_ids(standin.ground_truth(creds[0]["login"]), big_event["event_id"])
    assert error_code(api.get(path, event_id=big_event["event_id"], results_per_page=2501)) == 3


def test_modified_after_timestamp_is_inclusive_at_ties(
    server: RunningServer, standin: RunSignUpStandIn, creds: list[dict[str, Any]], big_event: dict[str, Any]
) -> None:
    truth = {
        k: v
        for k, v in standin.ground_truth(creds[0]["login"]).items()
        if k[1] == big_event["event_id"] and "removed_reason" not in v
    }
    stamps = Counter(v["last_modified"] for v in truth.values())
    tie = max(ts for ts, n in stamps.items() if n > 1)  # the newest shared value: a short answer
    api = as_api(server, creds[0])
    path = f"/Rest/race/{big_event['race_id']}/participants"
    at_tie = api.get(
        path, event_id=big_event["event_id"], results_per_page=2500, modified_after_timestamp=tie
    )[0]["participants"]
    assert {p["registration_id"] for p in at_tie} == {
        k[2] for k, v in truth.items() if v["last_modified"] >= tie
    }
    assert sum(1 for p in at_tie if p["last_modified"] == tie) == stamps[tie] >= 2
    after_tie = api.get(
        path, event_id=big_event["event_id"], results_per_page=2500, modified_after_timestamp=tie + 1
    )[0]["participants"]
    assert all(p["last_modified"] > tie for p in after_tie)


def test_removed_participants(
    server: RunningServer, standin: RunSignUpStandIn, creds: list[dict[str, Any]], big_event: dict[str, Any]
) -> None:
    api = as_api(server, creds[0])
    body = api.get(
        f"/REST/race/{big_event['race_id']}/removed-participants",
        event_id=big_event["event_id"],
        results_per_page=2500,
    )
    assert isinstance(body, list) and set(body[0]) == {"event"}
    removed = body[0]["event"]["participants"]
    assert len(removed) == big_event["removed_count"] > 0
    for record in removed:
        assert record["removed_reason"] in {"cleared", "removed", "transferred", "deferred"}
        assert SQL_DATETIME.match(record["last_modified"]) and SQL_DATETIME.match(record["registration_date"])
        assert isinstance(record["last_modified_ts"], int)
        assert (record["new_registration_id"] is not None) == (record["removed_reason"] == "transferred")
    newest = max(r["last_modified_ts"] for r in removed)
    again = api.get(
        f"/Rest/race/{big_event['race_id']}/removed-participants",
        event_id=big_event["event_id"],
        modified_after_timestamp=newest,
    )
    assert [r["last_modified_ts"] for r in again[0]["event"]["participants"]] == [newest] * sum(
        1 for r in removed if r["last_modified_ts"] == newest
    )


# -- errors in HTTP 200 -----------------------------------------------------------------------------
def test_authentication_and_permission_errors(
    server: RunningServer, standin: RunSignUpStandIn, creds: list[dict[str, Any]]
) -> None:
    own_race = standin.races_of(creds[0]["login"])[0].race_id
    other_race = standin.races_of(creds[1]["login"])[0].race_id
    path = f"/Rest/race/{own_race}/participants"
    wrong = Api(server, creds[0]["login"], "not-the-secret")
    assert error_code(wrong.get(path)) == 6
    partial = Api(server)
    assert error_code(partial.get(path, api_key=creds[0]["login"])) == 6
    assert error_code(partial.get(path, api_secret=creds[0]["password"])) == 6
    api = as_api(server, creds[0])
    assert error_code(api.get(f"/Rest/race/{other_race}/participants")) == 7
    assert error_code(api.get("/Rest/race/424242/participants")) == 201
    assert error_code(api.get("/Rest/race/424242/removed-participants")) == 201
    header_auth = requests.get(
        server.url + path,
        params={"format": "json", "rsu_api_key": creds[0]["login"]},
        headers={"X-RSU-API-SECRET": creds[0]["password"]},
        timeout=10,
    ).json()
    assert isinstance(header_auth, list)


def test_throttle_is_error_14_in_http_200(fresh: tuple[RunSignUpStandIn, RunningServer]) -> None:
    standin, running = fresh
    standin.clock = clock = ManualClock()  # the scaled hour slides only when the test moves this clock
    cred = standin.integrations()[0]
    requests.post(
        running.url + "/_control/knobs", json={"per_hour": 5, "time_scale": 1 / 3600}, timeout=5
    ).raise_for_status()
    api = as_api(running, cred)
    answers = [api.get("/Rest/races") for _ in range(6)]
    assert all("races" in a for a in answers[:5])
    assert answers[5] == {"error": {"error_code": 14, "error_msg": "Request throttled."}}
    stats = requests.get(running.url + "/_control/stats", timeout=5).json()
    assert stats["throttles"][cred["login"]] == 1
    clock.advance(0.9)
    assert error_code(api.get("/Rest/races")) == 14  # still inside the scaled hour
    clock.advance(0.11)  # one scaled hour later the quota is back
    assert "races" in api.get("/Rest/races")


def test_throttle_next_answers_error_14_for_exactly_that_many_calls(
    fresh: tuple[RunSignUpStandIn, RunningServer],
) -> None:
    standin, running = fresh
    cred = standin.integrations()[0]
    requests.post(running.url + "/_control/knobs", json={"throttle_next": 2}, timeout=5).raise_for_status()
    api = as_api(running, cred)
    answers = [api.get("/Rest/races") for _ in range(3)]
    assert [error_code(a) for a in answers[:2]] == [14, 14] and "races" in answers[2]
    stats = requests.get(running.url + "/_control/stats", timeout=5).json()
    assert stats["throttles"] == {cred["login"]: 2} and stats["knobs"]["throttle_next"] == 0


def test_truncate_next_cuts_bodies_mid_way(fresh: tuple[RunSignUpStandIn, RunningServer]) -> None:
    standin, running = fresh
    cred = standin.integrations()[0]
    requests.post(
        running.url + "/_control/knobs", json={"truncate_next": 1, "truncate_at_bytes": 5}, timeout=5
    ).raise_for_status()
    url = running.url + "/Rest/races"
    params = {"format": "json", "api_key": cred["login"], "api_secret": cred["password"]}
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url, params=params, timeout=10)
    assert "races" in requests.get(url, params=params, timeout=10).json()
    assert requests.get(running.url + "/_control/stats", timeout=5).json()["truncated"] == 1


def test_malformed_records(fresh: tuple[RunSignUpStandIn, RunningServer]) -> None:
    standin, running = fresh
    cred = standin.integrations()[1]
    race = standin.races_of(cred["login"])[0]
    requests.post(running.url + "/_control/knobs", json={"malformed_rate": 1.0}, timeout=5).raise_for_status()
    body = as_api(running, cred).get(
        f"/Rest/race/{race.race_id}/participants", event_id=race.events[0].event_id
    )
    records = body[0]["participants"]
    assert records
    for record in records:
        assert "registration_id" not in record or record["last_modified"] == "abc" or record["user"] is None


# -- mutations and accounting -------------------------------------------------------------------------
def mutate(running: RunningServer, **payload: Any) -> dict[str, Any]:
    response = requests.post(running.url + "/_control/mutate", json=payload, timeout=30)
    response.raise_for_status()
    return response.json()["result"]


def test_mutations_are_visible_through_the_api(fresh: tuple[RunSignUpStandIn, RunningServer]) -> None:
    standin, running = fresh
    cred = standin.integrations()[1]
    race = next(s for s in standin.races.values() if s.name == "Río Grande Trail Run")
    event = race.events[0]
    api = as_api(running, cred)
    path = f"/Rest/race/{race.race_id}/participants"
    before = {
        p["registration_id"]: p
        for p in api.get(path, event_id=event.event_id, results_per_page=2500)[0]["participants"]
    }

    modified = mutate(running, action="modify_participants", event_id=event.event_id, n=3, field="email")
    assert modified["count"] == 3
    changed = {row["registration_id"] for row in modified["participants"]}
    fresh_rows = api.get(path, event_id=event.event_id, modified_after_timestamp=modified["at"])[0][
        "participants"
    ]
    assert {p["registration_id"] for p in fresh_rows} == changed
    assert all(
        p["last_modified"] == modified["at"]
        and p["user"]["email"] != before[p["registration_id"]]["user"]["email"]
        for p in fresh_rows
    )

    added = mutate(running, action="add_participants", event_id=event.event_id, n=2)
    new_ids = [row["registration_id"] for row in added["participants"]]
    assert min(new_ids) > max(before)
    tail = api.get(path, event_id=event.event_id, after_registration_id=max(before))[0]["participants"]
    assert [p["registration_id"] for p in tail] == sorted(new_ids)

    removed = mutate(
        running, action="remove_participants", event_id=event.event_id, n=2, reason="transferred"
    )
    gone = {row["registration_id"] for row in removed["participants"]}
    now_active = {
        p["registration_id"]
        for p in api.get(path, event_id=f"{event.event_id},{race.events[1].event_id}", results_per_page=2500)[
            0
        ]["participants"]
    }
    assert not gone & now_active
    removed_rows = api.get(
        f"/Rest/race/{race.race_id}/removed-participants",
        event_id=event.event_id,
        modified_after_timestamp=removed["at"],
    )[0]["event"]["participants"]
    assert {r["registration_id"] for r in removed_rows} == gone
    targets = {r["new_registration_id"] for r in removed_rows}
    other_event = api.get(path, event_id=race.events[1].event_id, results_per_page=2500)[0]["participants"]
    assert targets <= {p["registration_id"] for p in other_event}

    truth = standin.ground_truth(cred["login"])
    assert all(truth[(race.race_id, event.event_id, rid)]["removed_reason"] == "transferred" for rid in gone)
    counts = {e["event_id"]: e["participant_count"] for e in standin.events_for(cred["login"])}
    assert counts[event.event_id] == event.count + 2 - 2

    everywhere = mutate(running, action="modify_participants", login=cred["login"], fraction=0.1)
    assert everywhere["count"] == round(0.1 * sum(counts.values()))
    assert {row["race_id"] for row in everywhere["participants"]} <= {
        s.race_id for s in standin.races_of(cred["login"])
    }

    mutate(running, action="revoke_credential", login=cred["login"])
    assert error_code(api.get("/Rest/races")) == 6
    mutate(running, action="restore_credential", login=cred["login"])
    assert "races" in api.get("/Rest/races")
    bad = requests.post(running.url + "/_control/mutate", json={"action": "explode"}, timeout=5)
    assert bad.status_code == 400


def test_stats_count_calls_per_credential_and_endpoint(fresh: tuple[RunSignUpStandIn, RunningServer]) -> None:
    standin, running = fresh
    one, two = standin.integrations()
    race = standin.races_of(two["login"])[0]
    as_api(running, one).get("/Rest/races")
    as_api(running, one).get("/rest/RACES")
    as_api(running, two).get(f"/Rest/race/{race.race_id}/participants")
    as_api(running, two).get(f"/Rest/race/{race.race_id}/removed-participants")
    as_api(running, two).get(f"/Rest/race/{race.race_id}")
    as_api(running, one).get(f"/Rest/race/{race.race_id}/participants")  # error 7, still a call
    stats = requests.get(running.url + "/_control/stats", timeout=5).json()
    assert stats["calls"][one["login"]] == {"races": 2, "participants": 1}
    assert stats["calls"][two["login"]] == {"participants": 1, "removed_participants": 1, "race": 1}
    assert stats["error_codes"] == {"7": 1}
    assert stats["total_calls"] == 6
