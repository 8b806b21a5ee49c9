"""Base of Paceline's API hooks: an Airflow hook that hands out an :class:`ApiSession`.

A hook reads its Airflow connection (any secrets backend), masks the credentials so that no task
log shows them, and builds a session whose calls go through the shared, per-credential rate
limiter stored in the warehouse.
"""

from __future__ import annotations

import functools
from typing import Any

from airflow.sdk import BaseHook

from paceline.config import WAREHOUSE_CONN_ID
from paceline.http.limiter import RateSpec, SharedRateLimiter
from paceline.http.session import ApiSession, RetryPolicy, mask, redact


@functools.cache
def warehouse_limiter(conn_id: str = WAREHOUSE_CONN_ID) -> SharedRateLimiter:
    """The process-wide limiter over the warehouse PostgreSQL."""
    from paceline.db.warehouse import dsn_from_airflow

    return SharedRateLimiter(dsn_from_airflow(conn_id))


class ApiHook(BaseHook):
    """Common machinery of the RunSignUp, Haku and Racing API hooks."""

    conn_name_attr = "conn_id"
    provider = "api"
    default_base_url = ""
    default_rates: tuple[RateSpec, ...] = ()

    def __init__(
        self,
        conn_id: str,
        *,
        rates: tuple[RateSpec, ...] | None = None,
        limiter: SharedRateLimiter | None = None,
        use_limiter: bool = True,
        retry: RetryPolicy | None = None,
        background: bool = False,
    ) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.background = background  # backfill work: scheduled syncs of the credential go first
        self._rates = rates
        self._limiter = limiter
        self.use_limiter = use_limiter
        self.retry = retry
        self._connection = None

    @property
    def connection(self):  # noqa: ANN201 - Airflow's Connection type differs between SDK and core
        if self._connection is None:
            conn = self.get_connection(self.conn_id)
            mask(conn.login, conn.password)
            self._connection = conn
        return self._connection

    @property
    def base_url(self) -> str:
        """The API base URL from the connection host (scheme added when missing)."""
        conn = self.connection
        host = (conn.host or self.default_base_url).rstrip("/")
        if "://" not in host:
            scheme = conn.schema if conn.schema in ("http", "https") else "https"
            host = f"{scheme}://{host}"
            if conn.port:
                host = f"{host}:{conn.port}"
        return host

    @property
    def rates(self) -> tuple[RateSpec, ...]:
        return self._rates if self._rates is not None else self.default_rates

    @property
    def limiter_key(self) -> str:
        return f"{self.provider}:{self.connection.login or self.conn_id}"

    def limiter(self) -> SharedRateLimiter | None:
        if not self.use_limiter:
            return None
        return self._limiter or warehouse_limiter()

    def session_kwargs(self) -> dict[str, Any]:
        """Provider-specific ApiSession arguments (auth, params, body checks)."""
        return {}

    def get_conn(self, rates: tuple[RateSpec, ...] | None = None) -> ApiSession:
        """A session for this credential; `rates` narrows the limit for endpoints a provider slows
        down (the limiter keeps one call log per credential, so every call still counts)."""
        return ApiSession(
            self.base_url,
            limiter=self.limiter(),
            limiter_key=self.limiter_key,
            rates=rates if rates is not None else self.rates,
            retry=self.retry,
            background=self.background,
            **self.session_kwargs(),
        )

    def probe(self, session: ApiSession) -> str:
        """One cheap call that proves the credentials work; returns what to show the user."""
        raise NotImplementedError

    def test_connection(self) -> tuple[bool, str]:
        """The UI's Test button: one probe call, outside the shared limiter (the API server may not
        reach the warehouse) and with short retries; the message never shows a credential."""
        saved = self.use_limiter, self.retry
        self.use_limiter, self.retry = False, RetryPolicy(attempts=1, base_s=0.5, throttle_max_wait_s=10)
        try:
            self.require_fields("login", "password")
            session = self.get_conn()
            try:
                return True, self.probe(session)
            finally:
                session.close()
        except Exception as exc:  # the Test button shows the message, whatever failed
            return False, redact(f"{exc.__class__.__name__}: {exc}")
        finally:
            self.use_limiter, self.retry = saved

    def require_fields(self, *fields: str) -> None:
        """Fail with a clear message when the connection lacks a field the provider needs."""
        conn = self.connection
        missing = [f for f in fields if not getattr(conn, f, None)]
        if missing:
            raise ValueError(f"connection {self.conn_id!r} lacks {', '.join(missing)} (needed for {self.provider})")
