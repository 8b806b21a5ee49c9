"""Airflow hook for The Racing API: HTTP Basic auth over the shared, rate-limited session."""

from __future__ import annotations

from typing import Any

import requests

from paceline.config import RACING_API_CONN_ID
from paceline.http.limiter import RateSpec
from paceline.http.session import ApiSession, RetryPolicy, Verdict
from paceline.providers.base import ApiHook

DEFAULT_BASE_URL = "https://api.theracingapi.com"
# "Requests are limited to 2 per second for every plan" (docs); the spec lowers a few to 1/s.
# Settled: the provider's one-second window exactly, each call logged when its answer is back (at
# most 50 ms after its admission), so no margin is lost to jitter (see paceline.http.limiter).
DEFAULT_RATES: tuple[RateSpec, ...] = (RateSpec(2, 1.0, settled=True),)
ONE_PER_SECOND: tuple[RateSpec, ...] = (RateSpec(1, 1.0, settled=True),)
PAGE_KEYS = ("racecards", "results", "courses")
THROTTLE_WAIT_S = 1.0


def empty_page_is_throttle(response: requests.Response, body: Any) -> Verdict | None:
    """The API's soft throttle: a 200 page whose ``total`` is missing or null.

    Under rapid calls the API answers ``{"results": [], "total": null}`` instead of a 429. Every
    real page carries an integer ``total`` (the spec requires it), so a page without one is a
    throttle to wait out, never "no data".
    """
    if isinstance(body, dict) and any(k in body for k in PAGE_KEYS) and body.get("total") is None:
        return Verdict(throttled=True)
    return None


class RacingApiHook(ApiHook):
    """The Racing API (https://api.theracingapi.com).

    Connection: host = base URL (default the real API), login / password = the API's Basic-auth
    "Username" / "Password". A connection of type ``http`` works the same.
    """

    conn_name_attr = "racing_api_conn_id"
    default_conn_name = RACING_API_CONN_ID
    conn_type = "racing_api"
    hook_name = "The Racing API"
    provider = "racing_api"
    default_base_url = DEFAULT_BASE_URL
    default_rates = DEFAULT_RATES

    def __init__(self, racing_api_conn_id: str = RACING_API_CONN_ID, **kwargs: Any) -> None:
        # The API's window is one second and its 429 names no Retry-After: wait about a second,
        # not the session's generic 5 s.
        kwargs["retry"] = kwargs.get("retry") or RetryPolicy(throttle_wait_s=THROTTLE_WAIT_S)
        super().__init__(racing_api_conn_id, **kwargs)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "port", "extra"],
            "relabeling": {"host": "Base URL", "login": "Username", "password": "Password"},
            "placeholders": {"host": DEFAULT_BASE_URL, "login": "API username", "password": "API password"},
        }

    def session_kwargs(self) -> dict[str, Any]:
        self.require_fields("login", "password")
        conn = self.connection
        return {
            "auth": (conn.login, conn.password),
            "headers": {"Accept": "application/json"},
            "body_check": empty_page_is_throttle,
        }

    def probe(self, session: ApiSession) -> str:
        """``/v1/courses/regions``, a Free-plan endpoint: one call."""
        regions = session.get_json("/v1/courses/regions")
        return f"Connected: {len(regions)} regions"
