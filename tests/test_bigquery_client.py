"""paceline.providers.bigquery against a loopback server scripted like BigQuery's REST API: a job
that is not done at once, pages, BigQuery's 403 throttle, 5xx retried with the same requestId, a
failed job, a 401 that a token refresh fixes, and the connection's credentials (the emulator's
path is covered by tests/nba)."""

from __future__ import annotations

import datetime as dt
import json
from collections import deque
from decimal import Decimal

import pytest

from paceline.http.session import ApiSession, RetryPolicy
from paceline.providers.bigquery import BigQueryClient, BigQueryError, NotFound
from paceline.providers.bigquery.client import is_rate_limited
from paceline.sandbox.base import Response, StandIn, serve

PROJECT = "proj"
SCHEMA = {"fields": [
    {"name": "d", "type": "DATE"}, {"name": "n", "type": "INTEGER"}, {"name": "x", "type": "FLOAT"},
    {"name": "ok", "type": "BOOLEAN"}, {"name": "amount", "type": "NUMERIC"}, {"name": "s", "type": "STRING"},
    {"name": "tags", "type": "STRING", "mode": "REPEATED"}, {"name": "at", "type": "TIMESTAMP"},
]}
ROW = {"f": [{"v": "2022-01-03"}, {"v": "7"}, {"v": "0.5"}, {"v": "true"}, {"v": "1.25"}, {"v": None},
             {"v": [{"v": "a"}, {"v": "b"}]}, {"v": "1700000000000000"}]}


def _error(status: int, reason: str, message: str) -> Response:
    return Response(status, {"error": {"code": status, "message": message, "errors": [{"reason": reason, "message": message}]}})


class FakeBigQuery(StandIn):
    """Answers each call of a route with the next scripted answer; records what it was sent."""

    name = "bigquery"

    def __init__(self) -> None:
        super().__init__()
        self.queries: deque[Response] = deque()
        self.results: deque[Response] = deque()
        self.jobs: deque[Response] = deque()
        self.seen: list[dict] = []
        base = f"/bigquery/v2/projects/{PROJECT}"
        self.route("POST", f"{base}/queries", self._answer(self.queries, "query"))
        self.route("GET", f"{base}/queries/{{job_id}}", self._answer(self.results, "results"))
        self.route("GET", f"{base}/jobs/{{job_id}}", self._answer(self.jobs, "job"))

    def _answer(self, script: deque[Response], kind: str):
        def handler(request):
            self.seen.append({"kind": kind, "auth": request.header("authorization"), "query": request.query,
                              "body": request.json() if request.method == "POST" else None})
            return script.popleft()
        return handler


@pytest.fixture
def bq():
    standin = FakeBigQuery()
    standin.knobs.throttle_mode = "off"
    running = serve(standin)
    waits: list[float] = []
    session = ApiSession(running.url, retry=RetryPolicy(jitter=0.0), sleep=waits.append, throttle_check=is_rate_limited)
    yield standin, BigQueryClient(session, PROJECT), waits
    running.stop()


def _done(job_id: str = "j1", **extra) -> Response:
    return Response(200, {"jobReference": {"projectId": PROJECT, "jobId": job_id, "location": "EU"},
                          "jobComplete": True, **extra})


def test_typed_parameters_and_rows_across_pages_of_a_job_not_done_at_once(bq) -> None:
    standin, client, _ = bq
    standin.queries.append(Response(200, {"jobReference": {"jobId": "j1", "location": "EU"}, "jobComplete": False}))
    standin.results.extend([_done(schema=SCHEMA, rows=[ROW], pageToken="p2"), _done(rows=[ROW])])
    result = client.query("SELECT ...", {"day": dt.date(2022, 1, 3), "n": 3, "name": "x", "flag": True})
    assert [row["d"] for row in result.rows] == [dt.date(2022, 1, 3)] * 2
    assert result.rows[0] == {"d": dt.date(2022, 1, 3), "n": 7, "x": 0.5, "ok": True, "amount": Decimal("1.25"),
                              "s": None, "tags": ["a", "b"], "at": dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)}
    sent = standin.seen[0]["body"]
    assert {p["name"]: (p["parameterType"]["type"], p["parameterValue"]["value"]) for p in sent["queryParameters"]} == {
        "day": ("DATE", "2022-01-03"), "n": ("INT64", "3"), "name": ("STRING", "x"), "flag": ("BOOL", "true")}
    assert sent["useLegacySql"] is False and sent["requestId"]
    # the job's location goes with every later call (BigQuery needs it outside US and EU)
    assert [s["query"].get("location") for s in standin.seen[1:]] == [["EU"], ["EU"]]
    assert standin.seen[2]["query"]["pageToken"] == ["p2"]


def test_the_403_throttle_is_waited_out_and_a_5xx_retried_with_the_same_request_id(bq) -> None:
    standin, client, waits = bq
    standin.queries.extend([
        _error(403, "rateLimitExceeded", "Exceeded rate limits: too many api requests per user per method"),
        _error(503, "backendError", "Backend error"),
        _done(numDmlAffectedRows="42"),
    ])
    result = client.query("MERGE ...")
    assert result.num_dml_affected_rows == 42
    assert len(waits) == 2 and client.session.stats.throttles == 1 and client.session.stats.retries == 1
    ids = {s["body"]["requestId"] for s in standin.seen}
    assert len(ids) == 1, "a retried jobs.query must carry the same requestId, or the MERGE could run twice"


def test_a_403_that_is_not_a_throttle_fails_at_once_as_permanent(bq) -> None:
    standin, client, waits = bq
    standin.queries.append(_error(403, "accessDenied", "Access Denied: Project proj: User does not have bigquery.jobs.create"))
    with pytest.raises(BigQueryError, match="bigquery.jobs.create") as refused:
        client.query("SELECT 1")
    assert refused.value.permanent and waits == []


def test_what_a_retry_can_fix_stays_retryable_and_the_rest_is_permanent(bq) -> None:
    """Decided by BigQuery's reason (and its words), not by the HTTP status: BigQuery answers 400
    for internal errors and for two MERGEs on one table at once, which a new job fixes."""
    standin, client, waits = bq
    answers = {
        ("jobInternalError", "The job encountered an internal error during execution. Retrying the job may solve the problem."): False,
        ("invalidQuery", "Could not serialize access to table proj:nba_analytics.player_game_summary due to concurrent update"): False,
        ("invalidQuery", "Query error: minutes_format: 1 box_player row(s) of 2022-01-03 have malformed minutes"): True,
        ("invalidQuery", 'Syntax error: Unexpected identifier "SELEC" at [1:1]'): True,
        ("notFound", "Not found: Table proj:nba_raw.box_player was not found in location US"): True,
        ("accessDenied", "Access Denied: Table proj:nba_raw.box_player: User does not have permission"): True,
    }
    for (reason, message), permanent in answers.items():
        standin.queries.append(_error(400 if reason != "notFound" else 404, reason, message))
        with pytest.raises(BigQueryError) as failed:
            client.query("SELECT 1")
        assert failed.value.permanent is permanent, (reason, message)
    assert waits == []  # a 400 is not retried inside the call: the task's retries decide


def test_a_failed_job_polled_for_its_results_fails_at_once(bq) -> None:
    """getQueryResults answers a failed job with the job's own reason; a job that failed for
    "too many table update operations" (403 rateLimitExceeded) must not be polled as a throttle."""
    standin, client, waits = bq
    standin.queries.append(Response(200, {"jobReference": {"jobId": "j9"}, "jobComplete": False}))
    standin.results.append(_error(403, "rateLimitExceeded", "Exceeded rate limits: too many table update operations"))
    with pytest.raises(BigQueryError, match="too many table update operations") as failed:
        client.query("MERGE ...")
    assert not failed.value.permanent and waits == [] and client.session.stats.throttles == 0
    # a job BigQuery has not made visible yet is not a missing table
    standin.queries.append(Response(200, {"jobReference": {"jobId": "j10"}, "jobComplete": False}))
    standin.results.append(_error(404, "notFound", "Not found: Job proj:j10"))
    with pytest.raises(BigQueryError) as missing:
        client.query("SELECT 1")
    assert not isinstance(missing.value, NotFound) and not missing.value.permanent


def test_not_done_answers_that_come_back_early_are_paced(bq) -> None:
    standin, client, waits = bq
    standin.queries.append(Response(200, {"jobReference": {"jobId": "j1"}, "jobComplete": False}))
    standin.results.extend([Response(200, {"jobReference": {"jobId": "j1"}, "jobComplete": False}), _done()])
    client.query("SELECT 1")
    assert waits == [1.0]  # one pause between the two polls, none after the last


def test_a_body_that_is_not_json_is_retryable(bq) -> None:
    standin, client, _ = bq
    standin.queries.append(Response(200, "<html>proxy error</html>", {"Content-Type": "text/html"}))
    with pytest.raises(BigQueryError, match="not JSON") as failed:
        client.query("SELECT 1")
    assert not failed.value.permanent


def test_a_failed_job_raises_its_reason_and_warnings_alone_do_not(bq) -> None:
    """A done job whose answer lists errors (the emulator's way of reporting a failure; BigQuery
    answers an HTTP error, tested above): the job's status decides."""
    standin, client, _ = bq
    standin.queries.append(_done(errors=[{"reason": "notFound", "message": "Not found: Table proj:nba_raw.x"}]))
    standin.jobs.append(Response(200, {"status": {"state": "DONE", "errorResult": {
        "reason": "notFound", "message": "Not found: Table proj:nba_raw.x"}}}))
    with pytest.raises(NotFound, match="nba_raw.x") as missing:
        client.query("SELECT * FROM nba_raw.x")
    assert missing.value.permanent
    standin.queries.append(_done(errors=[{"reason": "warning", "message": "slow"}], schema=SCHEMA, rows=[ROW]))
    standin.jobs.append(Response(200, {"status": {"state": "DONE"}}))
    assert len(client.query("SELECT ...").rows) == 1


def test_a_transient_job_failure_is_not_permanent(bq) -> None:
    standin, client, _ = bq
    standin.queries.append(_done(errors=[{"reason": "backendError", "message": "try again"}]))
    standin.jobs.append(Response(200, {"status": {"errorResult": {"reason": "backendError", "message": "try again"}}}))
    with pytest.raises(BigQueryError) as failed:
        client.query("SELECT 1")
    assert not failed.value.permanent  # the task's retries are for this


class FakeCredentials:
    """google-auth's credential protocol: before_request puts the token on, refresh renews it."""

    def __init__(self) -> None:
        self.token, self.refreshed = "first", 0

    def before_request(self, request, method, url, headers) -> None:
        headers["authorization"] = f"Bearer {self.token}"

    def refresh(self, request) -> None:
        self.refreshed += 1
        self.token = f"fresh{self.refreshed}"


def test_an_expired_token_is_refreshed_once_on_401(bq, monkeypatch) -> None:
    from paceline.providers.bigquery.hook import GoogleCredentialsAuth

    standin, _, waits = bq
    credentials = FakeCredentials()
    auth = GoogleCredentialsAuth(credentials)
    session = ApiSession(bq[1].session.base_url, auth=auth, on_unauthorized=auth.refresh, sleep=waits.append)
    client = BigQueryClient(session, PROJECT)
    standin.queries.extend([_error(401, "authError", "Request had invalid authentication credentials"), _done()])
    client.query("SELECT 1")
    assert [s["auth"] for s in standin.seen] == ["Bearer first", "Bearer fresh1"]


def test_the_connection_decides_credentials_project_and_endpoint(monkeypatch, tmp_path) -> None:
    from paceline.providers.bigquery.hook import BigQueryRestHook, endpoint

    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    assert endpoint() == "https://bigquery.googleapis.com"
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", "127.0.0.1:9050")
    assert endpoint() == "http://127.0.0.1:9050"

    monkeypatch.setenv("AIRFLOW_CONN_BQ_ANON", json.dumps({"conn_type": "google_cloud_platform",
                                                           "extra": {"project": "p1", "is_anonymous": True}}))
    client = BigQueryRestHook("bq_anon").get_client()
    assert client.project == "p1" and client.session.session.auth is None

    monkeypatch.setenv("AIRFLOW_CONN_BQ_NO_PROJECT", json.dumps({"conn_type": "google_cloud_platform",
                                                                 "extra": {"is_anonymous": True}}))
    with pytest.raises(BigQueryError, match="set the connection's extra 'project'") as missing:
        BigQueryRestHook("bq_no_project").get_client()
    assert missing.value.permanent

    key = _service_account_key()
    monkeypatch.setenv("AIRFLOW_CONN_BQ_KEY", json.dumps({"conn_type": "google_cloud_platform",
                                                          "extra": {"keyfile_dict": json.dumps(key)}}))
    credentials, project = BigQueryRestHook("bq_key").get_credentials_and_project()
    assert project == "key-project" and credentials.service_account_email == key["client_email"]
    assert credentials.scopes == ["https://www.googleapis.com/auth/cloud-platform"]

    # a key pasted with its newlines escaped, under the old prefixed names, with a scope and a
    # quota project; and a key file
    escaped = {**key, "private_key": key["private_key"].replace("\n", "\\n")}
    prefix = "extra__google_cloud_platform__"
    monkeypatch.setenv("AIRFLOW_CONN_BQ_OLD", json.dumps({"conn_type": "google_cloud_platform", "extra": {
        f"{prefix}keyfile_dict": json.dumps(escaped), f"{prefix}project": "p2",
        f"{prefix}scope": "https://www.googleapis.com/auth/bigquery, https://www.googleapis.com/auth/drive",
        f"{prefix}quota_project_id": "billing-project"}}))
    credentials, project = BigQueryRestHook("bq_old").get_credentials_and_project()
    assert project == "p2" and credentials.quota_project_id == "billing-project"
    assert credentials.scopes == ["https://www.googleapis.com/auth/bigquery", "https://www.googleapis.com/auth/drive"]
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps(key))
    monkeypatch.setenv("AIRFLOW_CONN_BQ_FILE", json.dumps({"conn_type": "google_cloud_platform",
                                                           "extra": {"key_path": str(key_file)}}))
    credentials, project = BigQueryRestHook("bq_file").get_credentials_and_project()
    assert project == "key-project" and credentials.service_account_email == key["client_email"]
    monkeypatch.setenv("AIRFLOW_CONN_BQ_BOTH", json.dumps({"conn_type": "google_cloud_platform", "extra": {
        "key_path": str(key_file), "keyfile_dict": json.dumps(key)}}))
    with pytest.raises(BigQueryError, match="both key_path and keyfile_dict"):
        BigQueryRestHook("bq_both").get_client()


def _service_account_key() -> dict:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return {"type": "service_account", "project_id": "key-project", "private_key_id": "k1", "private_key": pem,
            "client_email": "paceline@key-project.iam.gserviceaccount.com", "client_id": "1",
            "token_uri": "https://oauth2.googleapis.com/token"}


def test_retries_spent_raise_a_retryable_error(bq) -> None:
    standin, client, waits = bq
    standin.queries.extend([_error(503, "backendError", "Backend error")] * 6)
    with pytest.raises(BigQueryError, match="HTTP 503 after 6 attempts") as unavailable:
        client.query("SELECT 1")
    assert not unavailable.value.permanent and len(waits) == 5  # the task's own retries come next
