"""Fixtures and helpers of the Haku sync and backfill tests: a stand-in per test, the integration
rows and Airflow connections that point at it, and a comparison with the stand-in's ground truth."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import psycopg
import pytest
import requests

from paceline.providers.haku.hook import TokenStore
from paceline.sandbox.base import RunningServer, serve
from paceline.sandbox.haku import HakuStandIn, build

CLEAN_HAKU = """
TRUNCATE registrations.haku_participants, registrations.haku_events, paceline.api_tokens;
DELETE FROM registrations.provider_integrations WHERE provider = 'haku'
"""
INSERT_PARTNER = "INSERT INTO registrations.timing_partners VALUES (%s, %s) ON CONFLICT DO NOTHING"
INSERT_INTEGRATION = """
INSERT INTO registrations.provider_integrations
    (integration_id, provider, timing_partner_id, organization, conn_id, enabled, calls_per_hour)
VALUES (%s, 'haku', %s, %s, %s, true, %s)
"""
SELECT_ROWS = """
SELECT event_id, participant_id, first_name, last_name, email, is_cancelled, updated_at, raw
FROM registrations.haku_participants WHERE timing_partner_id = %s
"""


@dataclass
class HakuWorld:
    standin: HakuStandIn
    server: RunningServer
    dsn: str
    integrations: list[dict[str, Any]]

    def integration(self, tp: int) -> dict[str, Any]:
        return next(i for i in self.integrations if i["timing_partner_id"] == tp)

    def control(self, what: str, body: dict[str, Any]) -> Any:
        response = requests.post(f"{self.server.url}/_control/{what}", json=body, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def knobs(self, **values: Any) -> None:
        self.control("knobs", values)

    def mutate(self, action: str, **payload: Any) -> dict[str, Any]:
        return self.control("mutate", {"action": action, **payload})["result"]

    def stats(self) -> dict[str, Any]:
        return requests.get(f"{self.server.url}/_control/stats", timeout=10).json()

    def reset_stats(self) -> None:
        self.control("reset", {})

    def calls(self, tp: int, endpoint: str) -> int:
        return self.stats()["calls"].get(self.integration(tp)["login"], {}).get(endpoint, 0)

    def events(self, tp: int) -> list[dict[str, Any]]:
        return self.standin.events_for(self.integration(tp)["login"])

    def event(self, name: str) -> dict[str, Any]:
        for integ in self.integrations:
            for ev in self.standin.events_for(integ["login"]):
                if ev["name"] == name:
                    return ev
        raise KeyError(name)

    def item(self, tp: int, event_name: str) -> dict[str, Any]:
        """A work item as plan() makes it, for one event (tests sync chosen events directly)."""
        integ = self.integration(tp)
        ev = self.event(event_name)
        return {
            "integration": {
                "integration_id": integ["integration_id"],
                "provider": "haku",
                "timing_partner_id": tp,
                "organization": integ["organization"],
                "conn_id": integ["conn_id"],
                "calls_per_hour": None,
                "calls_per_second": None,
            },
            "event_id": ev["event_id"],
            "event_name": ev["name"],
            "event_date": ev["event_date"],
        }

    def stored(self, tp: int) -> dict[tuple[str, str], tuple]:
        with psycopg.connect(self.dsn) as conn:
            return {(r[0], r[1]): r for r in conn.execute(SELECT_ROWS, (tp,)).fetchall()}

    def assert_matches_truth(self, tp: int, event_ids: set[str] | None = None) -> int:
        """The warehouse rows of partner tp equal the stand-in's registrations, field by field."""
        truth = self.standin.ground_truth(self.integration(tp)["login"])
        if event_ids is not None:
            truth = {k: v for k, v in truth.items() if k[0] in event_ids}
        stored = self.stored(tp)
        if event_ids is not None:
            stored = {k: v for k, v in stored.items() if k[0] in event_ids}
        assert set(stored) == set(truth), (
            f"missing {sorted(set(truth) - set(stored))[:5]}, extra {sorted(set(stored) - set(truth))[:5]}"
        )
        for key, detail in truth.items():
            row = stored[key]
            person = detail["participant"]
            assert row[2:6] == (person["first_name"], person["last_name"], person["email"], detail["is_cancelled"]), key
            assert row[6].strftime("%Y-%m-%dT%H:%M:%SZ") == detail["updated_at"], key
            assert row[7] == detail, key
        return len(truth)


def audit_rows(dsn: str, unit: str | None = None) -> list[dict[str, Any]]:
    query = "SELECT * FROM paceline.sync_audit WHERE provider = 'haku' ORDER BY audit_id"
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        rows = cur.execute(query).fetchall()
    return [r for r in rows if unit is None or r["unit"] == unit]


@pytest.fixture(name="haku")
def haku_fixture(warehouse: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[HakuWorld]:
    """A fresh small-scale Haku stand-in, its integrations registered and its connections set.

    Both sides share a 1-second "hour" (500 calls per second per credential): the stand-in
    enforces it, the shared limiter keeps the client under it.
    """
    standin = build("small", seed=7)
    standin.knobs.update({"time_scale": 1 / 3600})
    server = serve(standin)
    integrations = standin.integrations(server.url)
    monkeypatch.setenv("PACELINE_RATE_HOUR_SECONDS", "1")
    monkeypatch.setenv("PACELINE_RETRY_BASE_S", "0.01")
    TokenStore.forget_memory()
    with psycopg.connect(warehouse, autocommit=True) as conn:
        conn.execute(CLEAN_HAKU)
        for integ in integrations:
            conn.execute(INSERT_PARTNER, (integ["timing_partner_id"], integ["timing_partner_name"]))
            conn.execute(
                INSERT_INTEGRATION,
                (integ["integration_id"], integ["timing_partner_id"], integ["organization"], integ["conn_id"], None),
            )
            monkeypatch.setenv(
                f"AIRFLOW_CONN_{integ['conn_id'].upper()}",
                json.dumps(
                    {
                        "conn_type": "http",
                        "host": server.url,
                        "login": integ["login"],
                        "password": integ["password"],
                        "extra": integ["extra"],
                    }
                ),
            )
    try:
        yield HakuWorld(standin, server, warehouse, integrations)
    finally:
        server.stop()
        TokenStore.forget_memory()


def today() -> date:
    return date.today()


__all__ = ["HakuWorld", "audit_rows", "haku_fixture", "today"]
