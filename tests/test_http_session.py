"""ApiSession against a local server that answers 500, 429 (with/without Retry-After), RunSignUp's
error 14 in a 200, The Racing API's empty 200, and 401: the right waits, retries and errors."""

from __future__ import annotations

import logging
from collections import deque

import pytest

from paceline.http.session import (
    ApiSession,
    PermanentApiError,
    RetryPolicy,
    TransientApiError,
    Verdict,
)
from paceline.sandbox.base import Response, StandIn, serve


class Scripted(StandIn):
    """Answers each call with the next scripted response."""

    name = "scripted"

    def __init__(self) -> None:
        super().__init__()
        self.script: deque[Response] = deque()
        self.seen: list[dict] = []
        self.route("GET", "/thing", self._thing)

    def _thing(self, request):
        self.seen.append({"auth": request.header("authorization"), "query": request.query})
        return self.script.popleft() if self.script else Response(200, {"ok": True, "total": 1})


@pytest.fixture
def server():
    standin = Scripted()
    standin.knobs.throttle_mode = "off"
    running = serve(standin)
    yield standin, running.url
    running.stop()


def _session(url: str, waits: list[float], **kwargs) -> ApiSession:
    return ApiSession(url, retry=RetryPolicy(jitter=0.0), sleep=waits.append, **kwargs)


def runsignup_check(response, body) -> Verdict | None:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        if error.get("error_code") == 14:
            return Verdict(throttled=True)
        return Verdict(error=f"error {error.get('error_code')}: {error.get('error_msg')}")
    return None


def racing_check(response, body) -> Verdict | None:
    if isinstance(body, dict) and "results" in body and body.get("total") is None:
        return Verdict(throttled=True)
    return None


def test_5xx_is_retried_with_exponential_backoff(server) -> None:
    standin, url = server
    standin.script.extend([Response(500, {"m": "x"}), Response(502), Response(503)])
    waits: list[float] = []
    session = _session(url, waits)
    assert session.get_json("/thing") == {"ok": True, "total": 1}
    assert waits == [2.0, 4.0, 8.0]
    assert session.stats.retries == 3 and session.stats.calls == 4


def test_5xx_beyond_the_attempts_raises_transient_error(server) -> None:
    standin, url = server
    standin.script.extend([Response(500, {"message": "boom"})] * 6)
    waits: list[float] = []
    with pytest.raises(TransientApiError, match="HTTP 500 after 6 attempts: boom"):
        _session(url, waits).get_json("/thing")
    assert waits == [2.0, 4.0, 8.0, 16.0, 32.0]


def test_429_with_retry_after_waits_that_long_and_spends_no_retry(server) -> None:
    standin, url = server
    standin.script.extend([Response(429, {"message": "Too Many Requests"}, {"Retry-After": "7"})] * 7)
    waits: list[float] = []
    session = _session(url, waits)
    assert session.get_json("/thing")["ok"]
    assert waits == [7.0] * 7  # more throttles than retry attempts: throttles are not failures
    assert session.stats.throttles == 7


def test_429_without_retry_after_backs_off(server) -> None:
    standin, url = server
    standin.script.extend([Response(429, {"message": "Limit Exceeded"})] * 3)
    waits: list[float] = []
    assert _session(url, waits).get_json("/thing")["ok"]
    assert waits == [5.0, 10.0, 20.0]


def test_runsignup_error_14_in_http_200_is_a_throttle(server) -> None:
    standin, url = server
    standin.script.append(Response(200, {"error": {"error_code": 14, "error_msg": "Request throttled."}}))
    waits: list[float] = []
    session = _session(url, waits, body_check=runsignup_check)
    assert session.get_json("/thing")["ok"]
    assert waits == [5.0] and session.stats.throttles == 1


def test_runsignup_other_error_in_http_200_is_permanent_with_the_provider_message(server) -> None:
    standin, url = server
    standin.script.append(Response(200, {"error": {"error_code": 201, "error_msg": "Race not found."}}))
    with pytest.raises(PermanentApiError, match="error 201: Race not found."):
        _session(url, [], body_check=runsignup_check).get_json("/thing")


def test_racing_api_empty_200_is_a_throttle_not_data(server) -> None:
    standin, url = server
    standin.script.append(Response(200, {"results": [], "total": None}))
    waits: list[float] = []
    body = _session(url, waits, body_check=racing_check).get_json("/thing")
    assert body == {"ok": True, "total": 1} and len(waits) == 1


def test_401_refreshes_auth_once_then_fails_permanently(server) -> None:
    standin, url = server
    standin.script.extend([Response(401, {"message": "Unauthorized"})] * 2)
    refreshes: list[int] = []
    session = _session(url, [], on_unauthorized=lambda: refreshes.append(1))
    with pytest.raises(PermanentApiError, match="HTTP 401: Unauthorized"):
        session.get_json("/thing")
    assert refreshes == [1]


def test_401_then_success_after_refresh(server) -> None:
    standin, url = server
    standin.script.append(Response(401, {"message": "Unauthorized"}))
    session = _session(url, [])
    session.on_unauthorized = lambda: session.session.headers.update({"Authorization": "fresh"})
    assert session.get_json("/thing")["ok"]
    assert standin.seen[-1]["auth"] == "fresh"


@pytest.mark.parametrize("status", [404, 422, 403])
def test_client_errors_are_permanent_and_not_retried(server, status: int) -> None:
    standin, url = server
    standin.script.append(Response(status, {"detail": [{"loc": ["query", "limit"], "msg": "bad"}]}))
    waits: list[float] = []
    with pytest.raises(PermanentApiError, match=f"HTTP {status}"):
        _session(url, waits).get_json("/thing")
    assert waits == [] and len(standin.seen) == 1


def test_connection_errors_are_retried_then_raised() -> None:
    waits: list[float] = []
    session = ApiSession("http://127.0.0.1:9", retry=RetryPolicy(attempts=2, jitter=0.0), sleep=waits.append)
    with pytest.raises(TransientApiError, match="ConnectionError after 3 attempts"):
        session.get_json("/thing")
    assert waits == [2.0, 4.0]


def test_query_credentials_never_reach_errors_or_logs(server, caplog) -> None:
    standin, url = server
    standin.script.extend([Response(500), Response(404, {"detail": "Not found"})])
    session = _session(url, [], default_params={"api_key": "KEY-123", "api_secret": "SECRET-456"})
    caplog.set_level(logging.DEBUG)
    with pytest.raises(PermanentApiError) as info:
        session.get_json("/thing")
    assert standin.seen[0]["query"]["api_secret"] == ["SECRET-456"]
    for text in (str(info.value), caplog.text):
        assert "SECRET-456" not in text and "KEY-123" not in text


def test_a_body_cut_mid_way_is_retried_like_a_connection_error(server) -> None:
    """The server sends the headers and 5 bytes of a longer body, then drops the connection."""
    standin, url = server
    standin.knobs.update({"truncate_next": 2, "truncate_at_bytes": 5})
    waits: list[float] = []
    session = _session(url, waits)
    assert session.get_json("/thing") == {"ok": True, "total": 1}
    assert standin.truncated == 2 and len(standin.seen) == 3
    assert waits == [2.0, 4.0] and session.stats.retries == 2 and session.stats.calls == 3


def test_a_streamed_body_cut_mid_way_is_retried_before_json_reads_it(server) -> None:
    standin, url = server
    standin.knobs.update({"truncate_next": 1, "truncate_at_bytes": 3})
    waits: list[float] = []
    response = _session(url, waits).request("GET", "/thing", stream=True)
    assert response.json() == {"ok": True, "total": 1}
    assert standin.truncated == 1 and waits == [2.0]


def test_bodies_cut_beyond_the_attempts_raise_transient_error(server) -> None:
    standin, url = server
    standin.knobs.update({"truncate_next": 3, "truncate_at_bytes": 0})
    waits: list[float] = []
    session = ApiSession(url, retry=RetryPolicy(attempts=2, jitter=0.0), sleep=waits.append)
    with pytest.raises(TransientApiError, match="ChunkedEncodingError after 3 attempts"):
        session.get_json("/thing")
    assert waits == [2.0, 4.0] and standin.truncated == 3
