"""haku_backfill: cheap size estimates, small events first, estimated vs actual sizes audited."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from paceline.registrations import haku_backfill
from paceline.registrations.planning import mapped_batches
from tests.registrations.haku_support import HakuWorld, audit_rows, haku_fixture  # noqa: F401 - fixture


def window(days_back: int, days_ahead: int) -> dict:
    today = date.today()
    return {"start_date": (today - timedelta(days=days_back)).isoformat(), "end_date": (today + timedelta(days=days_ahead)).isoformat()}


def test_backfill_orders_small_first_and_records_estimates(haku: HakuWorld) -> None:
    # in the window: Harbor Lights 5K (5), Lakeshore Turkey Trot (35), Pacific Coast 10K (60)
    params = {**window(30, 30), "large_threshold": 40}
    planned = haku_backfill.plan(params)
    small = [i for b in planned["small"] for i in b]
    large = [i for b in planned["large"] for i in b["events"]]
    assert [(i["event_name"], i["estimated_size"]) for i in large] == [("Pacific Coast 10K", 60)]
    # the large batch waits for exactly its own credential's small batches
    (large_batch,) = planned["large"]
    own = large_batch["events"][0]["integration"]["integration_id"]
    assert large_batch["after_small"] == [
        n for n, b in enumerate(planned["small"]) if b[0]["integration"]["integration_id"] == own
    ]
    assert sorted((i["event_name"], i["estimated_size"]) for i in small) == [("Harbor Lights 5K", 5), ("Lakeshore Turkey Trot", 35)]
    assert haku.stats()["calls"].get(haku.integration(3)["login"], {}).get("registration", 0) == 0  # no detail call to size
    assert planned["figures"]["estimate_calls"] <= 12
    for item in small + large:  # the order the DAG runs them in
        result = haku_backfill.sync_item(item, params)
        assert result["sync_type"] == "backfill" and result["actual_size"] == item["estimated_size"]
    rows = [r for r in audit_rows(haku.dsn) if r["sync_type"] == "backfill"]
    assert [r["unit"] for r in rows] == [i["event_id"] for i in small + large]
    assert all(r["estimated_size"] == r["actual_size"] and r["status"] == "success" for r in rows)
    haku.assert_matches_truth(3)
    haku.assert_matches_truth(2, {haku.event("Lakeshore Turkey Trot")["event_id"]})


def test_backfill_rerun_is_cheap_and_one_integration_only(haku: HakuWorld) -> None:
    params = {**window(30, 30), "integration_id": haku.integration(3)["integration_id"]}
    planned = haku_backfill.plan(params)
    items = [i for b in planned["small"] for i in b] + [i for b in planned["large"] for i in b["events"]]
    assert {i["integration"]["timing_partner_id"] for i in items} == {3}
    haku_backfill.sync_batch(items, params)
    haku.reset_stats()
    again = haku_backfill.sync_batch(items, params)  # a resumed or repeated backfill
    assert sum(r["details"] for r in again) == 0 and sum(r["inserted"] + r["updated"] for r in again) == 0
    haku.assert_matches_truth(3)


def test_backfill_params_are_checked(haku: HakuWorld) -> None:
    with pytest.raises(ValueError, match="valid: haku-tp2, haku-tp3"):
        haku_backfill.plan({"integration_id": "haku-tp9"})
    with pytest.raises(ValueError, match="after end_date"):
        haku_backfill.plan({"start_date": "2026-05-01", "end_date": "2026-04-01"})


def test_estimate_is_exact_across_page_caps(haku: HakuWorld) -> None:
    from paceline.providers.haku.client import HakuClient
    from paceline.providers.haku.hook import HakuHook

    session = HakuHook(haku.integration(2)["conn_id"]).get_conn()
    client = HakuClient(session)
    marathon = haku.event("Lakeshore Marathon Weekend")
    for cap in (25, 100, 7):
        haku.knobs(max_per_page=cap)
        before = session.stats.calls
        assert client.estimate_participants(marathon["event_id"], 100) == marathon["registration_count"] == 1200
        assert session.stats.calls - before <= 2 * (1200 // cap).bit_length() + 2
    assert client.estimate_participants(haku.event("Lakeshore Winter Dash")["event_id"]) == 0


def _item(integration_id: str, n: int) -> dict:
    return {"integration": {"integration_id": integration_id}, "event_id": f"{integration_id}-{n}"}


def test_mapped_batches_keep_one_credential_per_batch_and_interleave() -> None:
    groups = [[_item("a", n) for n in range(6)], [_item("b", n) for n in range(2)], [_item("c", n) for n in range(1)]]
    few = mapped_batches(groups, max_items=512)
    assert [b[0]["event_id"] for b in few] == ["a-0", "b-0", "c-0", "a-1", "b-1", "a-2", "a-3", "a-4", "a-5"]
    assert all(len(b) == 1 for b in few)
    capped = mapped_batches(groups, max_items=4)
    assert len(capped) <= 4
    assert all(len({i["integration"]["integration_id"] for i in b}) == 1 for b in capped)
    assert sorted(i["event_id"] for b in capped for i in b) == sorted(i["event_id"] for g in groups for i in g)
    # order within a credential is kept (smallest first, as planned)
    assert [i["event_id"] for b in capped for i in b if i["integration"]["integration_id"] == "a"] == [f"a-{n}" for n in range(6)]
    assert haku_backfill.small_tasks_by_integration(few) == {"a": [0, 3, 5, 6, 7, 8], "b": [1, 4], "c": [2]}


def test_a_large_batch_waits_only_for_its_own_credentials_small_tasks() -> None:
    states = {"sync_small_0": "success", "sync_small_1": "running", "sync_small_2": "failed", "sync_small_3": "up_for_retry"}
    assert haku_backfill.unfinished_small_tasks(states, [0, 2]) == []
    assert haku_backfill.unfinished_small_tasks(states, [0, 1, 3, 4]) == [1, 3, 4]  # 4: not even created yet

    class FakeTaskInstance:  # the Task SDK's RuntimeTaskInstance, as far as the wait uses it
        dag_id = "haku_backfill"

        def __init__(self, run_states: dict) -> None:
            self.run_states = run_states

        def get_task_states(self, dag_id: str, task_ids: list[str], run_ids: list[str]) -> dict:
            assert (dag_id, task_ids) == ("haku_backfill", ["sync_small"])
            return {run_ids[0]: self.run_states}

    from airflow.sdk.exceptions import AirflowRescheduleException

    haku_backfill.wait_for_small_events([0, 2], FakeTaskInstance(states), "r1")  # all finished: returns
    with pytest.raises(AirflowRescheduleException) as waited:
        haku_backfill.wait_for_small_events([0, 1], FakeTaskInstance(states), "r1", poll_s=30)
    assert 20 < (waited.value.reschedule_date - datetime.now(UTC)).total_seconds() <= 30
    haku_backfill.wait_for_small_events([], FakeTaskInstance({}), "r1")  # a credential without small events


def test_every_backfill_batch_runs_alone_on_its_credential_and_comes_back_when_the_holder_expects_to_be_done(
    haku: HakuWorld,
) -> None:
    """While another task holds the credential's lane, a batch (small or large) reschedules before
    any call: until the holder expects to be done when it said so, else after lane_recheck_s()."""
    from paceline.http.limiter import QuotaSpent, lane_recheck_s, reschedule_after_s
    from paceline.registrations import haku_sync
    from paceline.registrations.planning import Integration

    params = {**window(30, 30), "large_threshold": 40}
    planned = haku_backfill.plan(params)
    (large_batch,) = planned["large"]
    events = large_batch["events"]
    iid = events[0]["integration"]["integration_id"]
    small = [b for b in planned["small"] if b[0]["integration"]["integration_id"] == iid]
    hook = haku_sync.hook_for(Integration.from_dict(events[0]["integration"]))
    limiter = hook.limiter()
    haku.reset_stats()
    with limiter.lane(hook.limiter_key) as lane:
        assert lane
        for batch in (events, small[0]):
            with pytest.raises(QuotaSpent) as spent:
                haku_backfill.sync_batch(batch, params)
            assert spent.value.in_use and spent.value.wait_s == pytest.approx(lane_recheck_s())  # the holder said nothing
        lane.expect_done_in(3 * reschedule_after_s() + 100)
        with pytest.raises(QuotaSpent) as spent:
            haku_backfill.sync_batch(small[0], params)
        assert 3 * reschedule_after_s() < spent.value.wait_s <= 3 * reschedule_after_s() + 100.1  # said to 0.1 s
        lane.expect_done_in(0)  # late: sent away for at least a reschedule's length
        with pytest.raises(QuotaSpent) as spent:
            haku_backfill.sync_batch(small[0], params)
        assert spent.value.wait_s == pytest.approx(reschedule_after_s())
        assert haku.stats()["calls"].get(haku.integration(3)["login"], {}).get("registration", 0) == 0
        assert not [r for r in audit_rows(haku.dsn) if r["sync_type"] == "backfill"]
    assert limiter.lane_free_in_s(hook.limiter_key) is None  # released: nobody holds it
    for batch in small:
        haku_backfill.sync_batch(batch, params)
    (result,) = haku_backfill.sync_batch(events, params)
    assert result["actual_size"] == 60
    haku.assert_matches_truth(3)


def test_a_lane_holder_says_when_it_expects_to_be_done_before_each_event(haku: HakuWorld, monkeypatch) -> None:
    """The holder's estimate is its remaining events' calls at the credential's quota, said before
    each event; expected_calls is a full sync's: a detail per registration and the pages."""
    monkeypatch.setenv("PACELINE_RATE_HOUR_SECONDS", "100")  # 0.2 s a call: estimates of seconds
    from paceline.http.limiter import hour_seconds
    from paceline.providers.haku.hook import DEFAULT_CALLS_PER_HOUR
    from paceline.registrations import haku_sync
    from paceline.registrations.planning import Integration

    assert haku_backfill.expected_calls({"estimated_size": 60}) == 60 + 3 + 1
    assert haku_backfill.expected_calls({"estimated_size": 0}) == 1
    assert haku_backfill.expected_calls({"estimated_size": -1}) is None
    planned = haku_backfill.plan({**window(30, 30), "large_threshold": 1000})
    small = [i for b in planned["small"] for i in b]
    by_integration: dict[str, list[dict]] = {}
    for item in small:
        by_integration.setdefault(item["integration"]["integration_id"], []).append(item)
    items = max(by_integration.values(), key=len)  # one credential's small events, as one batch
    assert len(items) >= 2
    hook = haku_sync.hook_for(Integration.from_dict(items[0]["integration"]))
    limiter, key = hook.limiter(), hook.limiter_key
    said: list[float | None] = []

    def look(item: dict, params: dict | None = None, **_: object) -> dict:
        said.append(limiter.lane_free_in_s(key))
        return {"event_id": item["event_id"]}

    haku_sync.sync_batch(items, {}, sync=look, background=True, alone=True, calls_of=haku_backfill.expected_calls)
    per_call_s = hour_seconds() / DEFAULT_CALLS_PER_HOUR
    for n, free_in in enumerate(said):
        expected = sum(haku_backfill.expected_calls(i) for i in items[n:]) * per_call_s
        assert free_in is not None and expected - 2 <= free_in <= expected + 0.1, (n, free_in, expected)
    assert said == sorted(said, reverse=True) and said[0] - said[-1] > 1  # what is left, not the whole batch
