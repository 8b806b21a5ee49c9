"""The Haku stand-in reproduces the contract and quirks of docs/providers.md, Haku, over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
import requests

from paceline.sandbox.base import ManualClock, RunningServer, serve
from paceline.sandbox.haku import HakuStandIn, build


def get_token(server: RunningServer, integration: dict[str, Any]) -> str:
    response = requests.post(
        server.url + "/oauth2/token",
        auth=(integration["login"], integration["password"]),
        data={"grant_type": "client_credentials"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer" and isinstance(body["expires_in"], int)
    return body["access_token"]


class Api:
    def __init__(self, server: RunningServer, token: str, bearer: bool = False) -> None:
        self.url = server.url
        self.headers = {"Authorization": f"Bearer {token}" if bearer else token}
        self.session = requests.Session()

    def get(self, path: str, **params: Any) -> requests.Response:
        return self.session.get(self.url + path, params=params, headers=self.headers, timeout=30)

    def json(self, path: str, **params: Any) -> Any:
        response = self.get(path, **params)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def standin() -> HakuStandIn:
    return build("small", seed=7)


@pytest.fixture(scope="module")
def server(standin: HakuStandIn) -> Iterator[RunningServer]:
    running = serve(standin)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def creds(standin: HakuStandIn, server: RunningServer) -> list[dict[str, Any]]:
    return standin.integrations(server.url)


@pytest.fixture(scope="module")
def api(server: RunningServer, creds: list[dict[str, Any]]) -> Api:
    return Api(server, get_token(server, creds[0]))


@pytest.fixture(scope="module")
def large_event(standin: HakuStandIn, creds: list[dict[str, Any]]) -> dict[str, Any]:
    return max(standin.events_for(creds[0]["login"]), key=lambda e: e["registration_count"])


@pytest.fixture
def fresh() -> Iterator[tuple[HakuStandIn, RunningServer]]:
    standin = build("small", seed=7)
    running = serve(standin)
    yield standin, running
    running.stop()


def knobs(server: RunningServer, **values: Any) -> None:
    requests.post(server.url + "/_control/knobs", json=values, timeout=5).raise_for_status()


def mutate(server: RunningServer, **payload: Any) -> dict[str, Any]:
    response = requests.post(server.url + "/_control/mutate", json=payload, timeout=30)
    response.raise_for_status()
    return response.json()["result"]


def all_participants(api: Api, event_id: str, per_page: int = 25) -> tuple[list[dict[str, Any]], int]:
    """Page until an empty page, as the contract advises; returns the rows and the calls made."""
    rows: list[dict[str, Any]] = []
    page = 1
    while True:
        chunk = api.json(
            f"/events/{event_id}/participants",
            page=page,
            per_page=per_page,
            sort_column="updated_at",
            sort_direction="desc",
        )
        if not chunk:
            return rows, page
        rows += chunk
        page += 1


# -- data ----------------------------------------------------------------------------------------
def test_small_world_shape(standin: HakuStandIn, creds: list[dict[str, Any]], server: RunningServer) -> None:
    assert [c["integration_id"] for c in creds] == ["haku-tp2", "haku-tp3"]
    assert [c["conn_id"] for c in creds] == ["haku_tp2", "haku_tp3"]
    assert all(
        c["organization"] and c["extra"] == {"token_url": server.url + standin.token_path} for c in creds
    )
    events = [e for c in creds for e in standin.events_for(c["login"])]
    counts = sorted(e["registration_count"] for e in events)
    assert counts[0] == 0 and counts[-1] > 1000 and all(5 <= n <= 60 for n in counts[1:-1])
    assert any(e["days_out"] < 0 for e in events) and any(e["days_out"] > 0 for e in events)


def test_same_seed_same_data_and_seed_scale_is_lazy() -> None:
    day = date(2026, 3, 1)
    one, two = build(seed=5, today=day), build(seed=5, today=day)
    login = one.integrations()[0]["login"]
    assert one.ground_truth(login) == two.ground_truth(login)
    assert build(seed=6, today=day).integrations()[0]["login"] != login
    seed = build("seed", seed=7)  # fast because lazy: no registration is generated until asked for
    integrations = seed.integrations()
    assert len(integrations) == 7 and len({i["timing_partner_id"] for i in integrations}) == 5
    assert not seed._cache


# -- token endpoint and auth -----------------------------------------------------------------------
def test_token_endpoint_errors(server: RunningServer, creds: list[dict[str, Any]]) -> None:
    url = server.url + "/oauth2/token"
    wrong = requests.post(
        url, auth=(creds[0]["login"], "nope"), data={"grant_type": "client_credentials"}, timeout=5
    )
    assert (wrong.status_code, wrong.json()) == (400, {"error": "invalid_client"})
    grant = requests.post(
        url, auth=(creds[0]["login"], creds[0]["password"]), data={"grant_type": "password"}, timeout=5
    )
    assert (grant.status_code, grant.json()) == (400, {"error": "unsupported_grant_type"})
    in_body = requests.post(
        url,
        data={
            "grant_type": "client_credentials",
            "client_id": creds[1]["login"],
            "client_secret": creds[1]["password"],
        },
        timeout=5,
    )
    assert in_body.status_code == 200 and in_body.json()["expires_in"] == 3600


def test_raw_and_bearer_tokens_and_401(server: RunningServer, creds: list[dict[str, Any]]) -> None:
    token = get_token(server, creds[0])
    assert token.count(".") == 2  # JWT-shaped
    assert isinstance(Api(server, token).json("/events"), list)
    assert isinstance(Api(server, token, bearer=True).json("/events"), list)
    for headers in ({}, {"Authorization": "not-a-token"}, {"Authorization": "Bearer "}):
        response = requests.get(server.url + "/events", headers=headers, timeout=5)
        assert (response.status_code, response.json()) == (401, {"message": "Unauthorized"})


def test_token_expires_after_lifetime_knob(fresh: tuple[HakuStandIn, RunningServer]) -> None:
    standin, running = fresh
    standin.clock = clock = ManualClock()  # the lifetime runs on a clock the test moves
    knobs(running, token_lifetime_s=1.0)
    cred = standin.integrations()[0]
    response = requests.post(
        running.url + "/oauth2/token",
        auth=(cred["login"], cred["password"]),
        data={"grant_type": "client_credentials"},
        timeout=5,
    )
    assert response.json()["expires_in"] == 1
    api = Api(running, response.json()["access_token"])
    assert api.get("/events").status_code == 200
    clock.advance(0.99)
    assert api.get("/events").status_code == 200
    clock.advance(0.02)
    expired = api.get("/events")
    assert (expired.status_code, expired.json()) == (401, {"message": "Unauthorized"})
    assert Api(running, get_token(running, cred)).get("/events").status_code == 200
    stats = requests.get(running.url + "/_control/stats", timeout=5).json()
    assert stats["tokens_issued"] == {cred["login"]: 2} and stats["unauthorized"] == 1
    mutate(running, action="expire_tokens", client_id=cred["login"])


def test_token_expires_after_token_uses_knob(fresh: tuple[HakuStandIn, RunningServer]) -> None:
    standin, running = fresh
    cred = standin.integrations()[0]
    api = Api(running, get_token(running, cred))
    knobs(running, token_uses=3)  # tokens issued from now on
    assert api.get("/events").status_code == 200  # the older token keeps its lifetime only
    api = Api(running, get_token(running, cred))
    assert [api.get("/events").status_code for _ in range(4)] == [200, 200, 200, 401]
    assert api.get("/events").status_code == 401  # dead for good
    knobs(running, throttle_next=1)
    fresh_api = Api(running, get_token(running, cred))
    assert fresh_api.get("/events").status_code == 429  # a throttled call spends no use of the token
    assert [fresh_api.get("/events").status_code for _ in range(4)] == [200, 200, 200, 401]
    stats = requests.get(running.url + "/_control/stats", timeout=5).json()
    assert stats["tokens_issued"] == {cred["login"]: 3} and stats["unauthorized"] == 3


def test_unknown_route_is_403_missing_authentication_token(server: RunningServer, api: Api) -> None:
    for path in ("/nope", "/events/x/participants/y", "/v1/events"):
        for headers in (api.headers, {}):
            response = requests.get(server.url + path, headers=headers, timeout=5)
            assert (response.status_code, response.json()) == (
                403,
                {"message": "Missing Authentication Token"},
            )
    assert requests.post(server.url + "/events", headers=api.headers, timeout=5).status_code == 403


# -- API shapes and paging -------------------------------------------------------------------------
def test_events_bare_array_inactive_hidden_and_capped(
    api: Api, standin: HakuStandIn, creds: list[dict[str, Any]]
) -> None:
    mine = standin.events_for(creds[0]["login"])
    active = api.json("/events")
    assert isinstance(active, list) and {e["id"] for e in active} == {
        e["event_id"] for e in mine if e["status"] == "active"
    }
    everything = api.json("/events", show_inactive="true", sort_column="event_date", sort_direction="desc")
    assert {e["id"] for e in everything} == {e["event_id"] for e in mine}
    assert [e["event_date"] for e in everything] == sorted(
        (e["event_date"] for e in everything), reverse=True
    )
    assert {"id", "name", "event_date", "status", "updated_at", "location_city"} <= set(everything[0])
    assert api.json("/events", page=2, per_page=25) == []


def test_participants_sorted_desc_capped_silently_and_empty_past_end(
    api: Api, standin: HakuStandIn, creds: list[dict[str, Any]], large_event: dict[str, Any]
) -> None:
    event_id = large_event["event_id"]
    asked_for_500 = api.json(f"/events/{event_id}/participants", per_page=500)
    assert len(asked_for_500) == 25  # silently capped: a "short page" stop rule would end here
    rows, calls = all_participants(api, event_id)
    assert len(rows) == large_event["registration_count"] == 1200 and calls == 49
    stamps = [r["updated_at"] for r in rows]
    assert stamps == sorted(stamps, reverse=True)
    assert len({r["registration_number"] for r in rows}) == 1200
    assert api.json(f"/events/{event_id}/participants", page=999) == []
    summary = rows[0]
    assert {"registration_number", "person_full_name", "email", "age", "gender", "team", "event_category_info",
            "registered_at", "is_cancelled", "transaction_amount", "updated_at"} == set(summary)  # fmt: skip
    truth = standin.ground_truth(creds[0]["login"])
    cancelled = {k[1] for k, v in truth.items() if k[0] == event_id and v["is_cancelled"]}
    assert cancelled and cancelled == {r["registration_number"] for r in rows if r["is_cancelled"]}


def test_registration_detail_and_404(
    api: Api, standin: HakuStandIn, creds: list[dict[str, Any]], large_event: dict[str, Any]
) -> None:
    event_id = large_event["event_id"]
    number = api.json(f"/events/{event_id}/participants")[0]["registration_number"]
    detail = api.json(f"/events/{event_id}/registrations/{number}")
    assert detail == standin.ground_truth(creds[0]["login"])[(event_id, number)]
    assert {"first_name", "last_name", "email", "dob", "address"} <= set(detail["participant"])
    assert {"tag_number", "chip_number", "name"} <= set(detail["event_categories"][0])
    assert api.get(f"/events/{event_id}/registrations/R-0000000").status_code == 404
    assert api.get("/events/ffffffffffffffffffff/participants").status_code == 404
    other = standin.events_for(creds[1]["login"])[0]["event_id"]
    assert api.get(f"/events/{other}/participants").status_code == 404  # another client's event


def test_empty_event(api: Api, standin: HakuStandIn, creds: list[dict[str, Any]]) -> None:
    empty = next(e for e in standin.events_for(creds[0]["login"]) if e["registration_count"] == 0)
    assert api.json(f"/events/{empty['event_id']}/participants") == []


# -- throttling, mutations, accounting ------------------------------------------------------------------
def test_quota_429_limit_exceeded_in_a_scaled_hour(fresh: tuple[HakuStandIn, RunningServer]) -> None:
    standin, running = fresh
    standin.clock = clock = ManualClock()  # the windows slide only when the test moves this clock
    knobs(running, per_hour=5, time_scale=1 / 3600)
    api = Api(running, get_token(running, standin.integrations()[0]))
    statuses = [api.get("/events").status_code for _ in range(5)]
    assert statuses == [200] * 5
    throttled = api.get("/events")
    assert (throttled.status_code, throttled.json()) == (429, {"message": "Limit Exceeded"})
    assert "Retry-After" not in throttled.headers
    assert get_token(running, standin.integrations()[0])  # the token endpoint is not metered
    clock.advance(0.9)
    assert api.get("/events").status_code == 429  # still inside the scaled hour
    clock.advance(0.11)
    assert api.get("/events").status_code == 200  # one scaled hour later the quota is back
    knobs(running, per_hour=None, per_second=2)
    burst = [api.get("/events") for _ in range(3)]
    assert [r.status_code for r in burst] == [200, 200, 429] and burst[2].json() == {
        "message": "Too Many Requests"
    }
    clock.advance(1.01)
    assert api.get("/events").status_code == 200


def test_throttle_next_throttles_exactly_that_many_calls(fresh: tuple[HakuStandIn, RunningServer]) -> None:
    standin, running = fresh
    cred = standin.integrations()[0]
    api = Api(running, get_token(running, cred))
    knobs(running, throttle_next=3)
    assert get_token(running, cred)  # the token endpoint is not metered: it spends none of the three
    assert [api.get("/events").status_code for _ in range(4)] == [429, 429, 429, 200]
    stats = requests.get(running.url + "/_control/stats", timeout=5).json()
    assert stats["throttles"] == {cred["login"]: 3} and stats["knobs"]["throttle_next"] == 0


def test_mutations_are_visible_through_the_api(fresh: tuple[HakuStandIn, RunningServer]) -> None:
    standin, running = fresh
    cred = standin.integrations()[1]
    event = max(standin.events_for(cred["login"]), key=lambda e: e["registration_count"])
    api = Api(running, get_token(running, cred))
    path = f"/events/{event['event_id']}/participants"
    before, _ = all_participants(api, event["event_id"])

    modified = mutate(running, action="modify_participants", event_id=event["event_id"], n=3, field="email")
    changed = {row["registration_number"] for row in modified["participants"]}
    top = api.json(path)[:3]
    assert {r["registration_number"] for r in top} == changed
    assert all(r["updated_at"] == modified["updated_at"] for r in top)
    detail = api.json(f"/events/{event['event_id']}/registrations/{top[0]['registration_number']}")
    assert detail["participant"]["email"].startswith("updated.")

    cancelled = mutate(
        running, action="remove_participants", event_id=event["event_id"], n=2, at=modified["at"] + 5
    )
    gone = {row["registration_number"] for row in cancelled["participants"]}
    top = api.json(path)[:2]
    assert {r["registration_number"] for r in top} == gone and all(r["is_cancelled"] for r in top)
    detail = api.json(f"/events/{event['event_id']}/registrations/{top[0]['registration_number']}")
    assert (
        detail["is_cancelled"] is True
        and detail["cancelled_at"] == detail["updated_at"] == cancelled["updated_at"]
    )

    added = mutate(
        running, action="add_participants", event_id=event["event_id"], n=4, at=modified["at"] + 10
    )
    after, _ = all_participants(api, event["event_id"])
    assert len(after) == len(before) + 4
    assert {r["registration_number"] for r in after[:4]} == {
        row["registration_number"] for row in added["participants"]
    }
    counts = {e["event_id"]: e for e in standin.events_for(cred["login"])}[event["event_id"]]
    assert counts["registration_count"] == event["registration_count"] + 4
    assert counts["cancelled_count"] == event["cancelled_count"] + 2

    everywhere = mutate(running, action="modify_participants", client_id=cred["login"], fraction=0.5)
    total = sum(e["registration_count"] for e in standin.events_for(cred["login"]))
    assert everywhere["count"] == round(total * 0.5)


def test_stats_count_calls_per_client_and_endpoint(fresh: tuple[HakuStandIn, RunningServer]) -> None:
    standin, running = fresh
    one, two = standin.integrations()
    api_one, api_two = Api(running, get_token(running, one)), Api(running, get_token(running, two))
    event = standin.events_for(two["login"])[0]["event_id"]
    api_one.get("/events")
    api_one.get("/events")
    number = api_two.json(f"/events/{event}/participants")[0]["registration_number"]
    api_two.get(f"/events/{event}/registrations/{number}")
    requests.get(running.url + "/events", timeout=5)  # no token
    stats = requests.get(running.url + "/_control/stats", timeout=5).json()
    assert stats["calls"][one["login"]] == {"token": 1, "events": 2}
    assert stats["calls"][two["login"]] == {"token": 1, "participants": 1, "registration": 1}
    assert stats["calls"]["anonymous"] == {"events": 1}
    assert stats["unauthorized"] == 1


def test_malformed_records(fresh: tuple[HakuStandIn, RunningServer]) -> None:
    standin, running = fresh
    cred = standin.integrations()[1]
    knobs(running, malformed_rate=1.0)
    event = max(standin.events_for(cred["login"]), key=lambda e: e["registration_count"])
    rows = Api(running, get_token(running, cred)).json(f"/events/{event['event_id']}/participants")
    assert rows
    for row in rows:
        assert "registration_number" not in row or row["updated_at"] == "abc" or row["is_cancelled"] == "no"


def test_hold_after_answers_n_calls_then_holds_the_rest_until_released(
    fresh: tuple[HakuStandIn, RunningServer],
) -> None:
    import threading

    standin, running = fresh
    api = Api(running, get_token(running, standin.integrations()[0]))
    knobs(running, hold_after=2)
    assert [api.get("/events").status_code for _ in range(2)] == [200, 200]
    answers: list[int] = []
    held = threading.Thread(target=lambda: answers.append(Api(running, api.headers["Authorization"]).get("/events").status_code))
    held.start()
    stats_url = running.url + "/_control/stats"
    for _ in range(6000):  # until the third call is held (the control API is never held)
        if requests.get(stats_url, timeout=5).json()["held"] == 1:
            break
    assert requests.get(stats_url, timeout=5).json()["held"] == 1 and held.is_alive() and answers == []
    knobs(running, hold_after=None)
    held.join(30)
    assert answers == [200] and requests.get(stats_url, timeout=5).json()["held"] == 0
