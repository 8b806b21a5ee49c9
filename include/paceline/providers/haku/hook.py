"""HakuHook: the Haku partner API behind a Cognito client-credentials token.

Connection (type ``haku`` or plain ``http``): host = API base (default https://api.hakuapp.com),
login = client id, password = client secret, extra ``{"token_url": "..."}`` (default the
production Cognito domain).

Tokens: one per credential, shared by every task and worker process through
``paceline.api_tokens`` and reused until shortly before expiry; a 401 refreshes it once. The
token is sent raw in ``Authorization`` (no "Bearer", as Haku expects), masked in logs, and stored
encrypted with a key derived from the client secret.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from cryptography.fernet import Fernet, InvalidToken

from paceline.http.limiter import RateSpec, hourly_quota
from paceline.http.session import ApiError, ApiSession, RetryPolicy
from paceline.providers.base import ApiHook, mask
from paceline.providers.haku import CONN_FIELDS, DEFAULT_BASE_URL, DEFAULT_TOKEN_URL, UI_FIELD_BEHAVIOUR

log = logging.getLogger(__name__)

DEFAULT_CALLS_PER_HOUR = 500
MIN_HOUR_MARGIN_S = 1.0
REFRESH_MARGIN_S = 300.0  # refresh 5 minutes early (or a tenth of a short lifetime)

SELECT_TOKEN = """
SELECT token_encrypted, refresh_after, refresh_after > now() AS fresh
FROM paceline.api_tokens WHERE credential_hash = %s
"""
UPSERT_TOKEN = """
INSERT INTO paceline.api_tokens (credential_hash, provider, token_encrypted, expires_at, refresh_after, fetched_at)
VALUES (%s, %s, %s, now() + make_interval(secs => %s), now() + make_interval(secs => %s), now())
ON CONFLICT (credential_hash) DO UPDATE SET
    token_encrypted = EXCLUDED.token_encrypted, expires_at = EXCLUDED.expires_at,
    refresh_after = EXCLUDED.refresh_after, fetched_at = EXCLUDED.fetched_at
"""
LOCK_CREDENTIAL = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"


def haku_rates(calls_per_hour: int | None = None, calls_per_second: float | None = None) -> tuple[RateSpec, ...]:
    """The credential's quota for the shared limiter.

    The hour is stretched by 1% (at least a second): a call admitted just as the oldest call
    leaves our window can reach Haku sooner after it than they left us (network and scheduling
    jitter), and Haku would then count both in its hour and answer 429 "Limit Exceeded".
    """
    return hourly_quota(calls_per_hour or DEFAULT_CALLS_PER_HOUR, calls_per_second, min_margin_s=MIN_HOUR_MARGIN_S)


TokenFetch = Callable[[], tuple[str, float]]  # -> (access token, expires_in seconds)


@dataclass
class _CachedToken:
    token: str
    refresh_at: datetime  # UTC


class TokenStore:
    """Tokens per credential: in this process, and in the warehouse for every other process.

    A PostgreSQL advisory lock per credential makes concurrent tasks wait for one token request
    instead of each asking Cognito for its own.
    """

    _memory: dict[str, _CachedToken] = {}
    _lock = threading.Lock()

    def __init__(self, dsn: str | None) -> None:
        self.dsn = dsn

    @staticmethod
    def credential_hash(token_url: str, client_id: str, client_secret: str) -> str:
        return hashlib.sha256(f"haku\0{token_url}\0{client_id}\0{client_secret}".encode()).hexdigest()

    @staticmethod
    def _fernet(client_secret: str) -> Fernet:
        key = hashlib.sha256(b"paceline-api-token\0" + client_secret.encode()).digest()
        return Fernet(base64.urlsafe_b64encode(key))

    def get(self, key: str, client_secret: str, fetch: TokenFetch, rejected: str | None = None) -> str:
        """A valid token for the credential; `fetch()` -> (token, expires_in) is called only when needed.

        `rejected` is a token the API just refused (401): it is never handed out again.
        """
        with self._lock:
            cached = self._memory.get(key)
            if cached and cached.token != rejected and cached.refresh_at > datetime.now(UTC):
                return cached.token
        if self.dsn is None:
            return self._fetch_into_memory(key, fetch)
        fernet = self._fernet(client_secret)
        with psycopg.connect(self.dsn) as conn, conn.transaction():
            stored = self._read(conn, key, fernet)
            if stored and stored[0] != rejected and stored[1]:
                return self._remember(key, stored[0], stored[2])
            conn.execute(LOCK_CREDENTIAL, (key,))
            stored = self._read(conn, key, fernet)  # another process may have fetched while we waited
            if stored and stored[0] != rejected and stored[1]:
                return self._remember(key, stored[0], stored[2])
            token, expires_in = fetch()
            refresh_in = max(0.0, expires_in - min(REFRESH_MARGIN_S, expires_in * 0.1))
            conn.execute(UPSERT_TOKEN, (key, "haku", fernet.encrypt(token.encode()).decode(), expires_in, refresh_in))
            return self._remember(key, token, datetime.now(UTC) + timedelta(seconds=refresh_in))

    def _read(self, conn: psycopg.Connection, key: str, fernet: Fernet) -> tuple[str, bool, datetime] | None:
        row = conn.execute(SELECT_TOKEN, (key,)).fetchone()
        if row is None:
            return None
        try:
            token = fernet.decrypt(row[0].encode()).decode()
        except InvalidToken:  # the secret was rotated: the stored token belongs to the old one
            return None
        mask(token)
        return token, bool(row[2]), row[1]

    def _remember(self, key: str, token: str, refresh_at: datetime) -> str:
        mask(token)
        with self._lock:
            self._memory[key] = _CachedToken(token, refresh_at)
        return token

    def _fetch_into_memory(self, key: str, fetch: TokenFetch) -> str:
        token, expires_in = fetch()
        refresh_in = max(0.0, expires_in - min(REFRESH_MARGIN_S, expires_in * 0.1))
        return self._remember(key, token, datetime.now(UTC) + timedelta(seconds=refresh_in))

    @classmethod
    def forget_memory(cls) -> None:
        with cls._lock:
            cls._memory.clear()


class HakuHook(ApiHook):
    """Airflow hook for Haku: a rate-limited session that carries a shared access token."""

    provider = "haku"
    conn_name_attr = "conn_id"  # Connection.get_hook() (the UI's Test button) passes conn_id=...
    default_conn_name = "haku_default"
    field_labels = {"login": "client id", "password": "client secret"}
    conn_type = "haku"
    hook_name = "Haku"
    default_base_url = DEFAULT_BASE_URL

    UI_FIELD_BEHAVIOUR = UI_FIELD_BEHAVIOUR
    CONN_FIELDS = CONN_FIELDS

    def __init__(
        self,
        conn_id: str = default_conn_name,
        *,
        calls_per_hour: int | None = None,
        calls_per_second: float | None = None,
        rates: tuple[RateSpec, ...] | None = None,
        token_store: TokenStore | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(conn_id, rates=rates if rates is not None else haku_rates(calls_per_hour, calls_per_second), **kwargs)
        self._token_store = token_store
        self._token: str | None = None

    # -- UI ---------------------------------------------------------------------------------------
    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": cls.UI_FIELD_BEHAVIOUR["hidden-fields"],
            "relabeling": cls.UI_FIELD_BEHAVIOUR["relabeling"],
            "placeholders": {**cls.UI_FIELD_BEHAVIOUR["placeholders"], "token_url": DEFAULT_TOKEN_URL},
        }

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import StringField

        return {"token_url": StringField(lazy_gettext("Token URL"), widget=BS3TextFieldWidget(), default=DEFAULT_TOKEN_URL)}

    # -- credentials ------------------------------------------------------------------------------
    @property
    def token_url(self) -> str:
        extra = self.connection.extra_dejson or {}
        return extra.get("token_url") or extra.get(f"extra__{self.conn_type}__token_url") or DEFAULT_TOKEN_URL

    @property
    def token_store(self) -> TokenStore:
        if self._token_store is None:
            dsn = None
            limiter = self.limiter() if self.use_limiter else None
            if limiter is not None:
                dsn = limiter.dsn
            else:
                try:
                    from paceline.db.warehouse import dsn_from_airflow

                    dsn = dsn_from_airflow()
                except Exception:  # no warehouse (e.g. a UI connection test): keep the token in memory
                    log.info("no warehouse connection: Haku token kept in this process only")
            self._token_store = TokenStore(dsn)
        return self._token_store

    def _request_token(self) -> tuple[str, float]:
        conn = self.connection
        # The token endpoint is Cognito's, outside the API's usage plan: no limiter, but retries.
        session = ApiSession(self.token_url, retry=self.retry)
        try:
            log.info("requesting a Haku access token for conn %s", self.conn_id)
            body = session.request(
                "POST",
                self.token_url,
                data={"grant_type": "client_credentials"},
                auth=(conn.login, conn.password),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ).json()
        finally:
            session.close()
        token = body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise ApiError(f"token endpoint {self.token_url} answered without access_token")
        mask(token)
        return token, float(body.get("expires_in") or 3600)

    def access_token(self, rejected: str | None = None) -> str:
        self.require_fields("login", "password")
        conn = self.connection
        key = TokenStore.credential_hash(self.token_url, conn.login, conn.password)
        self._token = self.token_store.get(key, conn.password, self._request_token, rejected=rejected)
        return self._token

    def get_conn(self) -> ApiSession:
        session = super().get_conn()
        session.session.headers["Authorization"] = self.access_token()

        def refresh() -> None:
            rejected = session.session.headers.get("Authorization")
            log.info("Haku answered 401: refreshing the access token once")
            session.session.headers["Authorization"] = self.access_token(rejected=rejected)

        session.on_unauthorized = refresh
        return session

    def session_kwargs(self) -> dict[str, Any]:
        return {"headers": {"Accept": "application/json"}}

    def probe(self, session: ApiSession) -> str:
        """A token (taken by get_conn) and one page of events."""
        events = session.get_json("/events", {"page": 1, "per_page": 1})
        count = len(events) if isinstance(events, list) else "?"
        return f"token from {self.token_url} accepted; /events answered ({count} on the first page)"


def quick_retry() -> RetryPolicy:
    """Tiny waits, for tests and benchmarks against the stand-in."""
    return RetryPolicy(base_s=0.01, max_s=0.05, throttle_wait_s=0.05, throttle_max_wait_s=60.0)
