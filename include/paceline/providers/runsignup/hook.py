"""Airflow hook for RunSignUp: partner key and secret from an Airflow connection.

Connection (type ``runsignup``, or plain ``http``): host = API base URL (default
``https://runsignup.com/Rest``), login = api_key, password = api_secret. The key pair travels as
query parameters, as RunSignUp's partner keys require; the hook masks both in task logs, the
session's error messages carry the URL without its query string, and a logging filter redacts
them from urllib3's debug lines.
"""

from __future__ import annotations

from typing import Any

import requests

from paceline.http.limiter import RateSpec, hourly_quota
from paceline.http.session import ApiSession, RetryPolicy, Verdict
from paceline.providers.base import ApiHook

DEFAULT_BASE_URL = "https://runsignup.com/Rest"
DEFAULT_CALLS_PER_HOUR = 1000  # a client choice seen in the wild (docs/providers.md, RunSignUp), overridable per integration
THROTTLED = 14  # "Request throttled."

def quota_rates(calls_per_hour: int | None = None, calls_per_second: float | None = None) -> tuple[RateSpec, ...]:
    """The limiter rates of one credential: its hourly quota (default 1,000) and an optional per-second cap."""
    return hourly_quota(calls_per_hour or DEFAULT_CALLS_PER_HOUR, calls_per_second)


def error_of(body: Any) -> tuple[int | None, str] | None:
    """(error_code, message) of a RunSignUp error body, or None; `error` may be an object or a string."""
    if not isinstance(body, dict) or "error" not in body:
        return None
    error = body["error"]
    if isinstance(error, dict):
        code = error.get("error_code")
        try:
            code = int(code) if code is not None else None
        except (TypeError, ValueError):
            code = None
        return code, str(error.get("error_msg") or error.get("message") or "unknown error")
    return None, str(error)


def body_check(response: requests.Response, body: Any) -> Verdict | None:
    """RunSignUp answers errors, throttling included, as HTTP 200 with an error body."""
    found = error_of(body)
    if found is None:
        return None
    code, message = found
    if code == THROTTLED:
        return Verdict(throttled=True)
    label = f"RunSignUp error {code}" if code is not None else "RunSignUp error"
    return Verdict(error=f"{label}: {message}")


class RunSignUpHook(ApiHook):
    """RunSignUp REST API over the shared session (limiter, retries, error 14 answered by waiting)."""

    default_conn_name = "runsignup_default"
    conn_type = "runsignup"
    hook_name = "RunSignUp"
    provider = "runsignup"
    default_base_url = DEFAULT_BASE_URL
    field_labels = {"login": "API key", "password": "API secret", "host": "Base URL"}

    def __init__(
        self,
        conn_id: str = default_conn_name,
        *,
        calls_per_hour: int | None = None,
        calls_per_second: float | None = None,
        rates: tuple[RateSpec, ...] | None = None,
        retry: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(conn_id, rates=rates if rates is not None else quota_rates(calls_per_hour, calls_per_second), retry=retry, **kwargs)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "port", "extra"],
            "relabeling": {"login": "API key", "password": "API secret", "host": "Base URL"},
            "placeholders": {"host": DEFAULT_BASE_URL, "login": "partner api_key", "password": "partner api_secret"},
        }

    @property
    def base_url(self) -> str:
        return super().base_url or DEFAULT_BASE_URL

    def session_kwargs(self) -> dict[str, Any]:
        self.require_fields("login", "password")
        conn = self.connection
        return {
            "default_params": {"api_key": conn.login, "api_secret": conn.password, "format": "json"},
            "body_check": body_check,
        }

    def get_client(self):  # noqa: ANN201 - avoids an import cycle in the annotation
        from paceline.providers.runsignup.client import RunSignUpClient

        return RunSignUpClient(self.get_conn())

    def probe(self, session: ApiSession) -> str:
        """The key's first race: one call."""
        body = session.get_json("races", {"only_partner_races": "T", "results_per_page": 1, "page": 1})
        races = body.get("races") if isinstance(body, dict) else None
        if races is None:
            raise ValueError("RunSignUp answered without a races list")
        return f"Connected to {self.base_url}: key accepted ({len(races)} race(s) on the first page)"
