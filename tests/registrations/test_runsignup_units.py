"""RunSignUp pieces without the warehouse: planning helpers, record models, the hook and the client envelopes."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from paceline.http.session import Verdict, redact
from paceline.providers.runsignup import models
from paceline.providers.runsignup.client import participants_of
from paceline.providers.runsignup.hook import RunSignUpHook, body_check, quota_rates
from paceline.registrations import planning
from paceline.registrations.runsignup_sync import SyncParams, group_work
from paceline.sandbox import base as sandbox_base
from paceline.sandbox import runsignup as rsu_standin

REF = models.EventRef(1, 100, 500)
NOW = datetime(2026, 11, 29, 10, 15, 1, tzinfo=UTC)


# -- planning ---------------------------------------------------------------------------------
def test_batch_caps_the_number_of_items_and_keeps_every_event() -> None:
    assert planning.batch([], 512) == []
    assert planning.batch([1, 2, 3], 512) == [[1], [2], [3]]
    groups = planning.batch(list(range(1600)), 512)
    assert len(groups) == 512 and [x for g in groups for x in g] == list(range(1600))
    assert {len(g) for g in groups} == {3, 4}


def test_group_work_stays_under_max_map_length_keeps_races_together_and_alternates_integrations() -> None:
    def events(tp: int, n: int) -> list[dict]:  # two events per race
        return [{"integration": {"timing_partner_id": tp}, "race_id": tp * 10_000 + i // 2, "event_id": i,
                 "race_name": f"R{i // 2}", "event_name": f"E{i}"} for i in range(n)]

    items = group_work([events(1, 2400), events(2, 800), events(3, 5)], 512)
    assert len(items) <= 512
    assert sum(len(i["events"]) for i in items) == 3205
    assert all(len({e["integration"]["timing_partner_id"] for e in i["events"]}) == 1 for i in items)
    races = [(e["race_id"], n) for n, i in enumerate(items) for e in i["events"]]
    assert len({race for race, _ in races}) == len(set(races))  # no race split over two items
    assert [i["events"][0]["integration"]["timing_partner_id"] for i in items[:3]] == [1, 2, 3]
    small = group_work([events(1, 3), events(2, 1)], 512)
    assert [i["label"] for i in small] == ["tp 1: R0 / E0, E1", "tp 2: R0 / E0 (0)", "tp 1: R1 / E2 (2)"]


def test_tiers_from_param_and_is_due() -> None:
    assert planning.tiers_from_param(None) == planning.DEFAULT_TIERS
    assert planning.tiers_from_param(planning.DEFAULT_TIERS_PARAM) == planning.DEFAULT_TIERS
    tiers = planning.tiers_from_param([[14, 60], [2, 15]])
    assert [t.within_days for t in tiers] == [2, 14, None]  # sorted, unbounded daily tier added
    with pytest.raises(ValueError, match="every_minutes"):
        planning.tiers_from_param([[2, 0]])
    with pytest.raises(ValueError, match="within_days"):
        planning.tiers_from_param([["soon", 15]])
    tomorrow = NOW.date() + timedelta(days=1)
    assert planning.is_due(tomorrow, None, NOW)
    # a 15-minute schedule a few seconds early still takes a 15-minute tier
    assert planning.is_due(tomorrow, NOW - timedelta(minutes=14, seconds=55), NOW)
    assert not planning.is_due(tomorrow, NOW - timedelta(minutes=10), NOW)
    assert not planning.is_due(NOW.date() + timedelta(days=10), NOW - timedelta(minutes=50), NOW)
    assert planning.is_due(NOW.date() + timedelta(days=10), NOW - timedelta(minutes=59), NOW)
    assert not planning.is_due(NOW.date() + timedelta(days=200), NOW - timedelta(hours=23), NOW)
    assert planning.is_due(NOW.date() - timedelta(days=1), NOW - timedelta(minutes=15), NOW)  # just happened


def test_sync_params_defaults_and_validation() -> None:
    p = SyncParams.from_params({})
    assert (p.force_full_sync, p.incremental_days, p.timing_partner_id, p.future_only, p.due_only) == (
        False, 7, None, True, True)
    assert SyncParams.from_params({"timing_partner_id": "3", "future_only": "false"}).timing_partner_id == 3
    with pytest.raises(ValueError):
        SyncParams.from_params({"incremental_days": -1})


# -- models -----------------------------------------------------------------------------------
def participant(**overrides: object) -> dict:
    record = {
        "user": {"first_name": "Margie", "last_name": "Stephens", "email": "m@example.com", "dob": "1986-01-06",
                 "gender": "F"},
        "registration_id": 2645624, "event_id": 500, "bib_num": None, "registration_date": "9/7/2021 15:15",
        "last_modified": 1631042122,
    }
    record.update(overrides)
    return record


@pytest.mark.parametrize("bib, expected", [(None, None), (123, "123"), ("H12", "H12"), ("00042", "00042")])
def test_participant_bib_is_text(bib: object, expected: str | None) -> None:
    assert models.parse_participant(participant(bib_num=bib), REF)["bib_num"] == expected


def test_participant_fields() -> None:
    row = models.parse_participant(participant(), REF)
    assert row["registration_date"] == datetime(2021, 9, 7, 15, 15)
    assert row["dob"] == date(1986, 1, 6)
    assert row["last_modified"] == 1631042122 and row["removed_reason"] is None
    assert (row["timing_partner_id"], row["race_id"], row["event_id"]) == (1, 100, 500)
    removed = {**participant(), "registration_date": "2021-09-07 15:20:36", "last_modified": "2021-09-23 09:54:37",
               "last_modified_ts": 1632405277, "removed_reason": "transferred", "new_registration_id": 7}
    row = models.parse_participant(removed, REF, removed=True)
    assert row["last_modified"] == 1632405277 and row["removed_reason"] == "transferred"
    assert row["registration_date"] == datetime(2021, 9, 7, 15, 20, 36)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"registration_id": None}, "registration_id is missing"),
        ({"last_modified": "abc"}, "last_modified is 'abc'"),
        ({"user": None}, "user is missing"),
        ({"registration_date": "yesterday"}, "registration_date 'yesterday'"),
        ({"registration_id": True}, "registration_id is a boolean"),
    ],
)
def test_malformed_participants_raise_parse_error(overrides: dict, message: str) -> None:
    with pytest.raises(models.ParseError, match=message):
        models.parse_participant(participant(**overrides), REF)


def test_envelopes_array_and_dict_forms() -> None:
    records = [participant(), participant(registration_id=2)]
    array = [{"event": {"event_id": 500, "participants": []}, "participants": records},
             {"event": {"event_id": 501, "participants": []}, "participants": [participant(registration_id=3)]}]
    assert participants_of(array, 500) == records
    assert participants_of({"event": {"event_id": 500}, "participants": records}, 500) == records
    removed = [{"event": {"event_id": 500, "participants": records}}]
    assert participants_of(removed, 500, removed=True) == records
    assert participants_of({"event": {"event_id": 500, "participants": records}}, 500, removed=True) == records


# -- hook -------------------------------------------------------------------------------------
def test_body_check_throttle_and_errors() -> None:
    assert body_check(None, {"error": {"error_code": 14, "error_msg": "Request throttled."}}) == Verdict(throttled=True)
    assert body_check(None, {"error": {"error_code": 201, "error_msg": "Race not found."}}).error == (
        "RunSignUp error 201: Race not found.")
    assert body_check(None, {"error": "Unauthorized"}).error == "RunSignUp error: Unauthorized"
    assert body_check(None, [{"participants": []}]) is None
    assert body_check(None, {"races": []}) is None


def test_quota_rates_default_and_scaled_hour(monkeypatch) -> None:
    assert [str(r) for r in quota_rates()] == ["1000/3636s"]  # the hour plus a 1% margin
    monkeypatch.setenv("PACELINE_RATE_HOUR_SECONDS", "36")
    assert [str(r) for r in quota_rates(500, 2)] == ["500/36.36s", "2/1s"]


def test_redact_hides_query_credentials() -> None:
    assert redact("GET /Rest/races?api_key=ABC&api_secret=xyz&format=json") == (
        "GET /Rest/races?api_key=***&api_secret=***&format=json")


def test_ui_field_behaviour() -> None:
    behaviour = RunSignUpHook.get_ui_field_behaviour()
    assert behaviour["relabeling"]["login"] == "API key" and behaviour["relabeling"]["password"] == "API secret"
    assert set(behaviour["hidden_fields"]) == {"schema", "port", "extra"}
    assert RunSignUpHook.conn_type == "runsignup" and RunSignUpHook.hook_name == "RunSignUp"


@pytest.mark.parametrize("conn_type", ["runsignup", "http"])
def test_test_connection_against_the_standin(monkeypatch, conn_type: str) -> None:
    standin = rsu_standin.build("small")
    server = sandbox_base.serve(standin)
    try:
        i = standin.integrations()[0]
        conn = {"conn_type": conn_type, "host": f"{server.url}/Rest", "login": i["login"], "password": i["password"]}
        monkeypatch.setenv("AIRFLOW_CONN_RSU_UNIT", json.dumps(conn))
        ok, message = RunSignUpHook("rsu_unit").test_connection()
        assert ok, message
        monkeypatch.setenv("AIRFLOW_CONN_RSU_UNIT", json.dumps({**conn, "password": "wrong-secret-123"}))
        ok, message = RunSignUpHook("rsu_unit").test_connection()
        assert not ok and "Key authentication failed" in message
        assert "wrong-secret-123" not in message and i["login"] not in message
    finally:
        server.stop()


def test_validate_connection_names_what_is_missing(monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_RSU_HALF", json.dumps({"conn_type": "http", "host": "http://x", "login": "k"}))
    with pytest.raises(ValueError, match=r"connection 'rsu_half' for runsignup lacks password \(API secret\)"):
        planning.validate_connection(RunSignUpHook, "rsu_half", ("login", "password"))
    with pytest.raises(ValueError, match=r"connection 'rsu_nowhere' .* is not defined"):
        planning.validate_connection(RunSignUpHook, "rsu_nowhere", ("login", "password"))
