"""Credentials and project from an Airflow ``google_cloud_platform`` connection, for BigQuery's REST API.

The connection is the google provider's (``google_cloud_default``), read the way its
``GoogleBaseHook`` reads it, with the common cases handled here without importing that hook:

- ``is_anonymous``: no credentials (the local emulator);
- ``keyfile_dict`` (a service-account key as JSON) or ``key_path`` (a ``.json`` key file);
- neither: Application Default Credentials (workload identity, ``gcloud auth
  application-default login``, a VM's service account).

Anything else the google provider supports (impersonation chains, credential configuration files,
keys in Secret Manager, ``.p12`` keys) is handed to ``GoogleBaseHook`` itself. ``scope`` and
``quota_project_id`` are honoured, and a key with escaped newlines is read as the provider reads it. The project is the connection's ``project``
extra, else the credentials'. ``BIGQUERY_EMULATOR_HOST`` points every call at an emulator.
"""

from __future__ import annotations

import json
import os
from typing import Any

import requests
from airflow.sdk import BaseHook

from paceline.config import GOOGLE_CONN_ID
from paceline.http.session import ApiSession, RetryPolicy, mask
from paceline.providers.bigquery.client import BigQueryClient, BigQueryError, is_rate_limited

DEFAULT_ENDPOINT = "https://bigquery.googleapis.com"
EMULATOR_ENV = "BIGQUERY_EMULATOR_HOST"
DEFAULT_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
EXTRA_PREFIX = "extra__google_cloud_platform__"  # connections written by older providers
# Extras only the google provider's own hook knows how to turn into credentials.
PROVIDER_ONLY_EXTRAS = ("impersonation_chain", "credential_config_file", "key_secret_name", "idp_issuer_url")


def endpoint() -> str:
    """BigQuery's API root: the emulator's when ``BIGQUERY_EMULATOR_HOST`` is set."""
    host = os.environ.get(EMULATOR_ENV, "").strip().rstrip("/")
    if not host:
        return DEFAULT_ENDPOINT
    return host if "://" in host else f"http://{host}"


class GoogleCredentialsAuth(requests.auth.AuthBase):
    """Puts a fresh access token on each request (``google-auth`` refreshes it when it expires)."""

    def __init__(self, credentials: Any) -> None:
        self.credentials = credentials

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        from google.auth.transport.requests import Request

        self.credentials.before_request(Request(), request.method, request.url, request.headers)
        return request

    def refresh(self) -> None:
        """After a 401: a token the server no longer takes is replaced before the retry."""
        from google.auth.transport.requests import Request

        self.credentials.refresh(Request())


def _field(extras: dict[str, Any], name: str) -> Any:
    return extras.get(name) or extras.get(f"{EXTRA_PREFIX}{name}")


class BigQueryRestHook(BaseHook):
    """BigQuery for the project of a ``google_cloud_platform`` connection, as a :class:`BigQueryClient`."""

    conn_name_attr = "gcp_conn_id"
    default_conn_name = GOOGLE_CONN_ID
    hook_name = "BigQuery (REST)"

    def __init__(self, gcp_conn_id: str = GOOGLE_CONN_ID, *, retry: RetryPolicy | None = None,
                 timeout: tuple[float, float] = (10.0, 60.0)) -> None:
        super().__init__()
        self.gcp_conn_id = gcp_conn_id
        self.retry = retry
        self.timeout = timeout

    def _extras(self) -> dict[str, Any]:
        return self.get_connection(self.gcp_conn_id).extra_dejson or {}

    def get_credentials_and_project(self) -> tuple[Any, str | None]:
        """The connection's credentials (None when anonymous) and its project, if it names one."""
        extras = self._extras()
        project = _field(extras, "project")
        if _field(extras, "is_anonymous"):
            return None, project
        key_path = _field(extras, "key_path")
        if any(_field(extras, name) for name in PROVIDER_ONLY_EXTRAS) or (key_path and not key_path.endswith(".json")):
            from airflow.providers.google.common.hooks.base_google import GoogleBaseHook

            credentials, found = GoogleBaseHook(gcp_conn_id=self.gcp_conn_id).get_credentials_and_project_id()
            return credentials, project or found  # the provider applied quota_project_id itself
        scopes = [s.strip() for s in str(_field(extras, "scope") or "").split(",") if s.strip()] or list(DEFAULT_SCOPES)
        keyfile = _field(extras, "keyfile_dict")
        if keyfile and key_path:  # as the provider: which one was meant is not ours to guess
            raise BigQueryError(f"connection {self.gcp_conn_id} sets both key_path and keyfile_dict: keep one",
                                reason="invalid")
        if keyfile or key_path:
            from google.oauth2 import service_account

            if keyfile:
                info = json.loads(keyfile) if isinstance(keyfile, str) else dict(keyfile)
            else:
                with open(key_path) as handle:
                    info = json.load(handle)
            # a key pasted into a form or an environment variable often keeps its newlines escaped
            info["private_key"] = str(info.get("private_key", "")).replace("\\n", "\n")
            mask(info["private_key"])
            credentials = service_account.Credentials.from_service_account_info(info, scopes=scopes)
            found = info.get("project_id")
        else:
            import google.auth

            credentials, found = google.auth.default(scopes=scopes)
        quota_project = _field(extras, "quota_project_id")
        if quota_project:  # who is billed for the calls, as the provider does
            credentials = credentials.with_quota_project(quota_project)
        return credentials, project or found

    def get_client(self) -> BigQueryClient:
        """A client for the connection's project; fails at once, saying what to set, without one."""
        credentials, project = self.get_credentials_and_project()
        if not project:
            raise BigQueryError(
                f"connection {self.gcp_conn_id} names no Google Cloud project and its credentials carry "
                "none: set the connection's extra 'project' (e.g. {\"project\": \"my-project\"})",
                reason="invalid",
            )
        auth = GoogleCredentialsAuth(credentials) if credentials is not None else None
        session = ApiSession(
            endpoint(), auth=auth, retry=self.retry, timeout=self.timeout, throttle_check=is_rate_limited,
            headers={"Accept": "application/json"}, on_unauthorized=auth.refresh if auth else None,
        )
        return BigQueryClient(session, project)

    def test_connection(self) -> tuple[bool, str]:
        try:
            client = self.get_client()
            client.query("SELECT 1 AS ok")
        except Exception as exc:  # the UI shows the message
            return False, str(exc)
        return True, f"Connected to BigQuery, project {client.project}"
