"""The BigQuery calls Paceline makes, over the REST API (v2) and the shared HTTP session.

- :meth:`BigQueryClient.query`: ``jobs.query`` with named parameters, then ``getQueryResults``
  until the job is done and every page is read; rows come back as dicts of Python values
  (DATE as ``datetime.date``, INT64 as ``int``, NUMERIC as ``Decimal``...).
- datasets (location, create) and tables (partitioning and clustering), for the set-up.

Transient answers (5xx, connection errors) are retried by the session; BigQuery's rate-limit
answer (HTTP 403 ``rateLimitExceeded``) is waited out like a 429. Every query carries a
``requestId``, so a retried ``jobs.query`` does not run the statement twice. A failed job raises
:class:`BigQueryError` with BigQuery's reason and message; a missing table or dataset
:class:`NotFound`.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import requests

from paceline.http.session import ApiError, ApiSession, PermanentApiError

log = logging.getLogger(__name__)

API_PATH = "/bigquery/v2"
# jobs.query and getQueryResults wait up to this long server-side before answering "not done";
# below the session's 60 s read timeout.
WAIT_MS = 20_000
MAX_ERRORS_SHOWN = 3


# Reasons a retry cannot change: the statement, the table or the permissions must be fixed first.
PERMANENT_REASONS = frozenset({"invalidQuery", "invalid", "notFound", "accessDenied", "duplicate", "billingNotEnabled"})
# ...except these: BigQuery answers some failures a new job would not hit with the same reasons
# (HTTP 400 invalidQuery for two MERGEs on one table at once, "Retrying the job may solve...").
RETRYABLE_MESSAGES = re.compile(r"concurrent update|could not serialize access|retrying the job may solve", re.I)
POLL_PAUSE_S = 1.0  # between two "not done yet" answers that came back early


class BigQueryError(RuntimeError):
    """A call or a job BigQuery refused; ``reason`` is BigQuery's (``invalidQuery``, ``notFound``...)."""

    def __init__(self, message: str, *, reason: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status

    @property
    def permanent(self) -> bool:
        """True when retrying cannot help (a bad statement, a missing table, no permission). Decided
        by BigQuery's reason, not the HTTP status: BigQuery answers 400 for some failures a retry
        fixes (``jobInternalError``, a concurrent update), and those stay retryable."""
        if RETRYABLE_MESSAGES.search(str(self)):
            return False
        return self.reason in PERMANENT_REASONS or self.status == 401


class NotFound(BigQueryError):
    """A table, dataset or job that does not exist."""


def is_rate_limited(response: requests.Response) -> bool:
    """BigQuery's throttle: HTTP 403 with reason ``rateLimitExceeded`` (not a permission error).

    Not on a job's results (``GET .../queries/{jobId}``): there the error answer is the failed
    job's own reason ("too many table update operations" is ``rateLimitExceeded`` too), and
    polling a failed job again cannot change it.
    """
    if response.status_code != 403 or "rateLimitExceeded" not in response.text:
        return False
    request = response.request
    return not (request is not None and request.method == "GET" and "/queries/" in (request.path_url or ""))


@dataclass(frozen=True)
class QueryResult:
    job_id: str
    rows: list[dict[str, Any]]
    num_dml_affected_rows: int | None = None


@dataclass(frozen=True)
class Table:
    table_id: str
    partition_type: str | None
    partition_field: str | None
    clustering_fields: list[str] | None


# -- parameters and values ---------------------------------------------------------------------

def _parameter(name: str, value: Any) -> dict[str, Any]:
    """A named query parameter, typed from the Python value."""
    if isinstance(value, bool):
        kind, text = "BOOL", "true" if value else "false"
    elif isinstance(value, int):
        kind, text = "INT64", str(value)
    elif isinstance(value, float):
        kind, text = "FLOAT64", repr(value)
    elif isinstance(value, Decimal):
        kind, text = "NUMERIC", str(value)
    elif isinstance(value, dt.datetime):  # before date: a datetime is a date
        if value.tzinfo is None:
            raise ValueError(f"query parameter {name}: a naive datetime is ambiguous; give it a time zone")
        kind, text = "TIMESTAMP", value.isoformat()
    elif isinstance(value, dt.date):
        kind, text = "DATE", value.isoformat()
    elif isinstance(value, str):
        kind, text = "STRING", value
    elif value is None:
        raise ValueError(f"query parameter {name} is None: write IS NULL in the SQL instead")
    else:
        raise TypeError(f"query parameter {name}: unsupported type {type(value).__name__}")
    return {"name": name, "parameterType": {"type": kind}, "parameterValue": {"value": text}}


def _scalar(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind in ("INTEGER", "INT64"):
        return int(value)
    if kind in ("FLOAT", "FLOAT64"):
        return float(value)
    if kind in ("NUMERIC", "BIGNUMERIC"):
        return Decimal(value)
    if kind in ("BOOLEAN", "BOOL"):
        return value in (True, "true", "TRUE")
    if kind == "DATE":
        return dt.date.fromisoformat(value)
    if kind == "TIMESTAMP":  # microseconds since the epoch (formatOptions.useInt64Timestamp)
        return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=int(value))
    if kind == "DATETIME":
        return dt.datetime.fromisoformat(value)
    if kind == "TIME":
        return dt.time.fromisoformat(value)
    if kind == "BYTES":
        return base64.b64decode(value)
    return value  # STRING, JSON, GEOGRAPHY, INTERVAL: as BigQuery writes them


def _value(field: Mapping[str, Any], cell: Any) -> Any:
    raw = cell.get("v") if isinstance(cell, dict) else cell
    if field.get("mode") == "REPEATED":
        return [_value({**field, "mode": "NULLABLE"}, item) for item in raw or []]
    if field.get("type") in ("RECORD", "STRUCT"):
        return None if raw is None else _row(field.get("fields", []), raw)
    return _scalar(field.get("type", "STRING"), raw)


def _row(fields: list[Mapping[str, Any]], raw: Mapping[str, Any]) -> dict[str, Any]:
    return {field["name"]: _value(field, cell) for field, cell in zip(fields, raw.get("f", []), strict=False)}


def _error_text(errors: list[Mapping[str, Any]]) -> str:
    return "; ".join(str(e.get("message") or e) for e in errors[:MAX_ERRORS_SHOWN])


def _raise_for(error: Mapping[str, Any], what: str) -> None:
    reason = error.get("reason")
    kind = NotFound if reason == "notFound" else BigQueryError
    raise kind(f"{what}: {error.get('message') or reason}", reason=reason)


class BigQueryClient:
    """BigQuery for one project through an :class:`ApiSession` whose requests carry the credentials.

    Build one with :class:`paceline.providers.bigquery.hook.BigQueryRestHook` (from an Airflow
    connection) or :meth:`anonymous` (the local emulator).
    """

    def __init__(self, session: ApiSession, project: str) -> None:
        self.session = session
        self.project = project

    @classmethod
    def anonymous(cls, endpoint: str, project: str, **session_kwargs: Any) -> BigQueryClient:
        """A client without credentials (the emulator at ``endpoint``)."""
        return cls(ApiSession(endpoint, throttle_check=is_rate_limited, **session_kwargs), project)

    # -- plumbing ---------------------------------------------------------------------------

    def _call(self, method: str, path: str, what: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.session.request(method, f"{API_PATH}/projects/{self.project}/{path}", **kwargs)
        except PermanentApiError as exc:
            raise self._refusal(exc, what) from exc
        except ApiError as exc:  # retries spent on 5xx, connection errors or throttles: retryable later
            raise BigQueryError(f"{what}: {exc}", reason="unavailable", status=exc.status) from exc
        try:
            return response.json() if response.content else {}
        except ValueError as exc:  # a proxy's HTML page, say: not BigQuery's answer, so worth a retry
            raise BigQueryError(f"{what}: not JSON: {response.text[:200]!r}", reason="unavailable") from exc

    @staticmethod
    def _refusal(exc: PermanentApiError, what: str) -> BigQueryError:
        reason, message = None, str(exc)
        try:
            error = json.loads(exc.body or "{}").get("error", {})
            reasons = [e.get("reason") for e in error.get("errors", []) if e.get("reason")]
            reason = reasons[0] if reasons else error.get("status")
            message = error.get("message") or message
        except (ValueError, AttributeError):
            pass
        kind = NotFound if exc.status == 404 or reason == "notFound" else BigQueryError
        return kind(f"{what}: {message}", reason=reason, status=exc.status)

    # -- queries ----------------------------------------------------------------------------

    def query(self, sql: str, params: Mapping[str, Any] | None = None, *, timeout_s: float | None = None) -> QueryResult:
        """Run one GoogleSQL statement with named ``@parameters``; wait for it; every row.

        ``timeout_s`` bounds the wait for the job (``BigQueryError`` with reason ``timeout``; the job
        may still finish on BigQuery); without it the task's own timeout applies.
        """
        body: dict[str, Any] = {
            "query": sql,
            "useLegacySql": False,
            "parameterMode": "NAMED",
            "queryParameters": [_parameter(name, value) for name, value in (params or {}).items()],
            "timeoutMs": WAIT_MS if timeout_s is None else min(WAIT_MS, int(timeout_s * 1000)),
            "requestId": str(uuid.uuid4()),  # a retried call does not start a second job
            "formatOptions": {"useInt64Timestamp": True},
        }
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        answer = self._call("POST", "queries", "query", json=body)
        reference = answer.get("jobReference") or {}
        job_id = reference.get("jobId", "")
        location = reference.get("location")  # BigQuery's, from the datasets the statement reads
        while not answer.get("jobComplete"):
            left_s = None if deadline is None else deadline - time.monotonic()
            if left_s is not None and left_s <= 0:
                raise BigQueryError(f"job {job_id} not done within {timeout_s:.0f} s", reason="timeout")
            asked = time.monotonic()
            answer = self._results(job_id, location, None, left_s)
            if not answer.get("jobComplete") and time.monotonic() - asked < POLL_PAUSE_S:
                self.session.sleep(POLL_PAUSE_S)
        if answer.get("errors"):
            self._raise_if_failed(job_id, location, answer["errors"])
        fields = (answer.get("schema") or {}).get("fields", [])
        rows = [_row(fields, raw) for raw in answer.get("rows", [])]
        token = answer.get("pageToken")
        while token:
            page = self._results(job_id, location, token)
            rows.extend(_row(fields, raw) for raw in page.get("rows", []))
            token = page.get("pageToken")
        affected = answer.get("numDmlAffectedRows")
        return QueryResult(job_id, rows, int(affected) if affected is not None else None)

    def _results(self, job_id: str, location: str | None, page_token: str | None,
                 left_s: float | None = None) -> dict[str, Any]:
        """``getQueryResults``. An error answer here is the job's own failure, classified by its
        reason; a 404 is a job BigQuery has not made visible yet, so it stays retryable."""
        wait_ms = WAIT_MS if left_s is None else max(0, min(WAIT_MS, int(left_s * 1000)))
        params: dict[str, Any] = {"timeoutMs": wait_ms, "formatOptions.useInt64Timestamp": "true"}
        if location:
            params["location"] = location
        if page_token:
            params["pageToken"] = page_token
        try:
            return self._call("GET", f"queries/{job_id}", f"results of job {job_id}", params=params)
        except NotFound as exc:
            raise BigQueryError(str(exc), reason="jobNotFound", status=exc.status) from exc

    def _raise_if_failed(self, job_id: str, location: str | None, errors: list[Mapping[str, Any]]) -> None:
        """A done job's answer that lists errors: the job's status says whether they failed it
        (some answers carry warnings only)."""
        params = {"location": location} if location else None
        try:
            status = self._call("GET", f"jobs/{job_id}", f"job {job_id}", params=params).get("status", {})
        except NotFound as exc:  # the job itself, not a table: not visible yet
            raise BigQueryError(str(exc), reason="jobNotFound", status=exc.status) from exc
        failure = status.get("errorResult")
        if failure:
            _raise_for(failure, f"job {job_id} failed")
        log.warning("job %s finished with messages: %s", job_id, _error_text(errors))

    # -- datasets and tables ----------------------------------------------------------------

    def dataset_location(self, dataset: str) -> str | None:
        """The dataset's location, or None when it does not exist."""
        try:
            return self._call("GET", f"datasets/{dataset}", f"dataset {dataset}").get("location") or "US"
        except NotFound:
            return None

    def create_dataset(self, dataset: str, location: str | None = None) -> bool:
        """Create ``dataset``; False when it already existed."""
        body: dict[str, Any] = {"datasetReference": {"projectId": self.project, "datasetId": dataset}}
        if location:
            body["location"] = location
        try:
            self._call("POST", "datasets", f"create dataset {dataset}", json=body)
        except BigQueryError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def get_table(self, table: str) -> Table | None:
        """``dataset.table``'s partitioning and clustering, or None when it does not exist."""
        dataset, name = table.split(".", 1)
        try:
            body = self._call("GET", f"datasets/{dataset}/tables/{name}", f"table {table}")
        except NotFound:
            return None
        partitioning = body.get("timePartitioning") or {}
        clustering = body.get("clustering")
        return Table(
            table_id=table,
            partition_type=partitioning.get("type") if partitioning else None,
            partition_field=partitioning.get("field") if partitioning else None,
            clustering_fields=list(clustering.get("fields", [])) if clustering else None,
        )

    def close(self) -> None:
        self.session.close()
