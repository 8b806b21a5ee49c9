"""One HTTP session per connection, with the shared limiter, retries and throttle handling.

Every provider client sends its calls through :class:`ApiSession`:

* each call first takes a slot from the shared limiter (per credential, every worker);
* connection errors (a reset in the middle of a body included) and 5xx are retried with exponential backoff and jitter (2, 4, 8, 16, 32 s);
* throttling in every form the providers use (429 with or without ``Retry-After``, or a
  provider-specific answer such as RunSignUp's error 14 in an HTTP 200 or The Racing API's empty
  200) is answered by waiting and trying again, without spending a retry;
* errors that retrying cannot fix (401 after one auth refresh, 403, 404, 422, provider error
  codes) raise :class:`PermanentApiError` with the provider's message.
"""

from __future__ import annotations

import http.client
import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import requests
import urllib3

if TYPE_CHECKING:  # the limiter (psycopg) is imported by sessions that use one: BigQuery's does not
    from paceline.http.limiter import RateSpec, SharedRateLimiter

log = logging.getLogger(__name__)

SECRET_QUERY_PARAMS = re.compile(
    r"((?:api_key|api_secret|tmp_key|tmp_secret|rsu_api_key|sp_api_key|access_token|token|password)=)[^&\s\"']+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """Text with credential query values (api_key=..., api_secret=..., token=...) replaced by ***."""
    return SECRET_QUERY_PARAMS.sub(r"\1***", text)


def mask(*values: Any) -> None:
    """Register values with Airflow's secrets masker (a no-op outside Airflow's logging)."""
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - very old SDKs
        return
    for value in values:
        if value:
            mask_secret(value)


class RedactQuerySecrets(logging.Filter):
    """urllib3 logs each request line at DEBUG, query string included; credentials sent as query
    parameters (RunSignUp's api_key/api_secret) must not reach any log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


logging.getLogger("urllib3.connectionpool").addFilter(RedactQuerySecrets())

DEFAULT_USER_AGENT = "paceline/0.1 (+https://github.com/paceline)"

# a connection reset in the middle of a body: requests wraps it while reading the content, but a
# streamed body read later (or another urllib3 path) can surface the raw urllib3/http.client error
RETRIED_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
    http.client.IncompleteRead,
)


class ApiError(Exception):
    """Base of the errors a provider call raises."""

    def __init__(self, message: str, *, status: int | None = None, url: str | None = None, body: Any = None):
        super().__init__(message)
        self.status = status
        self.url = url
        self.body = body


class PermanentApiError(ApiError):
    """An answer that retrying cannot change (bad credentials, unknown id, invalid parameters)."""


class TransientApiError(ApiError):
    """Retries exhausted on connection errors or 5xx answers."""


class ThrottleStormError(ApiError):
    """The provider kept throttling for longer than the session agreed to wait."""


@dataclass
class RetryPolicy:
    """Backoff for connection errors and 5xx; default waits 2, 4, 8, 16, 32 s (each ±25% jitter)."""

    attempts: int = 5
    base_s: float = 2.0
    factor: float = 2.0
    max_s: float = 60.0
    jitter: float = 0.25
    throttle_wait_s: float = 5.0  # wait after a throttle that names no Retry-After
    throttle_max_wait_s: float = 1800.0  # total time to keep answering throttles before giving up

    def backoff(self, attempt: int) -> float:
        delay = min(self.max_s, self.base_s * self.factor ** (attempt - 1))
        return max(0.0, delay * (1 + random.uniform(-self.jitter, self.jitter)))

    def throttle_backoff(self, consecutive: int) -> float:
        delay = min(self.max_s, self.throttle_wait_s * 2 ** min(consecutive - 1, 4))
        return delay * (1 + random.uniform(0, self.jitter))


@dataclass
class Verdict:
    """What a provider's body check says about an answer that looks successful over HTTP."""

    throttled: bool = False
    error: str | None = None  # set: a permanent provider error with this message


BodyCheck = Callable[[requests.Response, Any], Verdict | None]


@dataclass
class CallStats:
    calls: int = 0
    retries: int = 0
    throttles: int = 0
    waited_s: float = 0.0
    by_status: dict[int, int] = field(default_factory=dict)


def retry_after_seconds(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def provider_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict):
        for key in ("error", "detail", "message", "error_description"):
            if key in body:
                value = body[key]
                if isinstance(value, dict):
                    return str(value.get("error_msg") or value)
                return str(value)[:500]
    return str(body)[:500]


# requests.Request's own arguments; the others of Session.request are the send's
REQUEST_ARGS = frozenset({"headers", "files", "data", "json", "auth", "cookies", "hooks"})


class ApiSession:
    """A requests session bound to one base URL and one credential's rate limit."""

    def __init__(
        self,
        base_url: str,
        *,
        limiter: SharedRateLimiter | None = None,
        limiter_key: str = "",
        rates: tuple[RateSpec, ...] = (),
        auth: requests.auth.AuthBase | tuple[str, str] | None = None,
        default_params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: tuple[float, float] = (10.0, 60.0),
        retry: RetryPolicy | None = None,
        body_check: BodyCheck | None = None,
        throttle_check: Callable[[requests.Response], bool] | None = None,
        on_unauthorized: Callable[[], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        background: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter
        self.limiter_key = limiter_key
        self.rates = rates
        self.background = background  # background work (a backfill) lets scheduled calls go first
        self.default_params = dict(default_params or {})
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.body_check = body_check
        self.throttle_check = throttle_check  # an error answer that means "slow down" (BigQuery's 403)
        self.on_unauthorized = on_unauthorized
        self.sleep = sleep
        self.stats = CallStats()
        self.session = requests.Session()
        self.session.headers["User-Agent"] = DEFAULT_USER_AGENT  # some APIs refuse python's default agent
        self.session.headers.update(headers or {})
        if auth is not None:
            self.session.auth = auth

    def url(self, path: str) -> str:
        if path.startswith("http://") or path.startswith("https://"):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def reschedule_if_quota_spent(self, calls: int = 1) -> None:
        """Raise QuotaSpent unless the first `calls` calls of a task fit the credential's quota now
        and no other task is waiting for it: a task that would only wait holds a pool slot that
        another credential's work could use. Call it before a task has done any work.

        Waits a per-second cap causes do not count. The task is rescheduled for when its calls fit,
        at least limiter.reschedule_after_s() away (a minute in a real hour). A scheduled task is
        not held back by background work (a backfill): its calls will go first, so it starts when
        the wait is short even if the backfill keeps the quota spent."""
        if self.limiter is None or not self.rates:
            return
        from paceline.http.limiter import QuotaSpent, reschedule_after_s, short_window_s

        key = self.limiter_key
        if self.background:
            wait = self.limiter.background_wait_s(key, self.rates, calls)
        else:
            wait = self.limiter.wait_s(key, self.rates, calls)
        if wait > reschedule_after_s():
            raise QuotaSpent(wait)
        if self.limiter.has_waiter(key):
            raise QuotaSpent(reschedule_after_s(), in_use=True)
        if wait > short_window_s(self.rates):
            if self.background or not self.limiter.has_background_work(key):
                raise QuotaSpent(reschedule_after_s(), in_use=True)
        elif self.background and self.limiter.has_waiter(key, background=True):
            raise QuotaSpent(reschedule_after_s(), in_use=True)

    def _take_slot(self) -> None:
        if self.limiter is not None and self.rates:
            waited = self.limiter.acquire(self.limiter_key, self.rates, background=self.background)
            self.stats.waited_s += waited

    def _prepare(
        self, method: str, url: str, params: Mapping[str, Any], kwargs: Mapping[str, Any]
    ) -> tuple[requests.PreparedRequest, dict[str, Any]]:
        """The request as requests.Session.request would build it, and its send arguments. Built
        before the call takes its slot, so that an admitted call goes out at once."""
        request_args = {k: v for k, v in kwargs.items() if k in REQUEST_ARGS}
        send_args = {k: v for k, v in kwargs.items() if k not in REQUEST_ARGS}
        prepared = self.session.prepare_request(requests.Request(method, url, params=dict(params), **request_args))
        settings = self.session.merge_environment_settings(
            prepared.url, send_args.pop("proxies", {}), send_args.pop("stream", None),
            send_args.pop("verify", None), send_args.pop("cert", None),
        )
        return prepared, {"timeout": self.timeout, "allow_redirects": True, **settings, **send_args}

    def _send(self, prepared: requests.PreparedRequest, send_args: Mapping[str, Any]) -> requests.Response:
        if self.limiter is None or not self.rates:
            return self.session.send(prepared, **send_args)
        settled = False

        def settle(response: requests.Response | None = None, *args: Any, **kw: Any) -> requests.Response | None:
            # The answer's headers (or a failure) are back, so the provider has counted the call by
            # now: a settled rate logs it at this moment if that is sooner (see the limiter). As a
            # response hook this runs before the body is read, which a large page takes a while to.
            nonlocal settled
            if not settled:
                settled = True
                self.limiter.settle(self.limiter_key, self.rates, answered_at=time.monotonic())
            return response

        prepared.register_hook("response", settle)
        try:
            return self.session.send(prepared, **send_args)
        finally:
            settle()

    def _wait(self, seconds: float, why: str) -> None:
        log.info("waiting %.1fs: %s", seconds, why)
        self.stats.waited_s += seconds
        self.sleep(seconds)

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, **kwargs: Any) -> requests.Response:
        """Send one logical call, answering throttles and transient failures; return the final response."""
        url = self.url(path)
        merged = {**self.default_params, **(params or {})}
        failures = 0
        throttles_in_a_row = 0
        throttled_since: float | None = None
        refreshed_auth = False
        while True:
            prepared, send_args = self._prepare(method, url, merged, kwargs)  # again after an auth refresh
            self._take_slot()
            self.stats.calls += 1
            try:
                response = self._send(prepared, send_args)
                response.content  # noqa: B018 - read the whole body here, where a cut is retried
            except RETRIED_ERRORS as exc:
                failures += 1
                if failures > self.retry.attempts:
                    raise TransientApiError(f"{method} {url}: {exc.__class__.__name__} after {failures} attempts", url=url) from exc
                self.stats.retries += 1
                self._wait(self.retry.backoff(failures), f"{exc.__class__.__name__} on {path}")
                continue
            status = response.status_code
            self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
            verdict = self._verdict(response) if status < 400 else None
            throttled = status == 429 or (verdict is not None and verdict.throttled)
            if not throttled and status >= 400 and self.throttle_check is not None:
                throttled = self.throttle_check(response)
            if throttled:
                throttles_in_a_row += 1
                self.stats.throttles += 1
                throttled_since = throttled_since or time.monotonic()
                if time.monotonic() - throttled_since > self.retry.throttle_max_wait_s:
                    raise ThrottleStormError(
                        f"{method} {url}: still throttled after {self.retry.throttle_max_wait_s:.0f}s",
                        status=status,
                        url=url,
                    )
                delay = retry_after_seconds(response) if status == 429 else None
                if delay is None:
                    delay = self.retry.throttle_backoff(throttles_in_a_row)
                self._wait(delay, f"throttled on {path} (HTTP {status})")
                continue
            throttles_in_a_row = 0
            throttled_since = None
            if status >= 500:
                failures += 1
                if failures > self.retry.attempts:
                    raise TransientApiError(
                        f"{method} {url}: HTTP {status} after {failures} attempts: {provider_message(response)}",
                        status=status,
                        url=url,
                    )
                self.stats.retries += 1
                self._wait(self.retry.backoff(failures), f"HTTP {status} on {path}")
                continue
            if status == 401 and self.on_unauthorized is not None and not refreshed_auth:
                refreshed_auth = True
                self.on_unauthorized()
                continue
            if status >= 400:
                raise PermanentApiError(
                    f"{method} {url}: HTTP {status}: {provider_message(response)}", status=status, url=url, body=response.text[:2000]
                )
            if verdict is not None and verdict.error:
                raise PermanentApiError(f"{method} {url}: {verdict.error}", status=status, url=url, body=response.text[:2000])
            return response

    def _verdict(self, response: requests.Response) -> Verdict | None:
        if self.body_check is None:
            return None
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None
        return self.body_check(response, body)

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        response = self.request("GET", path, params=params)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise PermanentApiError(f"GET {self.url(path)}: answer is not JSON: {response.text[:200]!r}", url=self.url(path)) from exc

    def close(self) -> None:
        self.session.close()
