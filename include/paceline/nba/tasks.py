"""What the NBA DAGs run, kept out of the DAG files so they stay declarative."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from paceline.nba import DEFERRABLE_SETTING, TRANSFORM_SQL, quality

FALSE_WORDS = {"0", "false", "no", "off"}


def bq_deferrable() -> bool:
    """Whether the BigQuery job operator defers while BigQuery works (default: yes).

    ``PACELINE_BQ_DEFERRABLE=false`` turns it off. Read from the environment at parse time on
    purpose: an Airflow Variable would cost a metadata lookup on every parse of the DAG file.
    On the emulator it is harmless: jobs finish inside the insert call, so the operator never
    defers (docs/nba.md); against BigQuery the wait happens in the triggerer, not a worker slot.
    """
    value = os.environ.get(DEFERRABLE_SETTING, "").strip().lower()
    return value not in FALSE_WORDS


def transform_configuration() -> dict[str, Any]:
    """BigQuery job configuration of one day: the .sql file, the day as a DATE query parameter.

    The operator renders ``query`` from the file (``template_ext`` includes ``.sql``; the DAG's
    ``template_searchpath`` points at ``paceline/nba/sql``) and the parameter from the run's data
    interval start, which is the game day.
    """
    return {
        "query": {
            "query": TRANSFORM_SQL,
            "useLegacySql": False,
            "queryParameters": [
                {
                    "name": "game_date",
                    "parameterType": {"type": "DATE"},
                    "parameterValue": {"value": "{{ data_interval_start.strftime('%Y-%m-%d') }}"},
                }
            ],
        }
    }


def _hook(gcp_conn_id: str) -> Any:
    from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook

    return BigQueryHook(gcp_conn_id=gcp_conn_id, use_legacy_sql=False)


def _figures(results: list[quality.CheckResult]) -> dict[str, Any]:
    share = next(r for r in results if r.rule == quality.NULL_SHARE_RULE.name)
    return {
        "checks": {r.rule: r.figure for r in results},
        "null_minutes_share": share.value,
    }


def _fail_without_retry(error: quality.DataQualityError) -> Exception:
    # Bad data stays bad on a retry: fail at once (retries stay for BigQuery's transient errors).
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(str(error))


def run_day_check(gcp_conn_id: str, day: dt.date) -> dict[str, Any]:
    """The day's quality gate; fails the task (no retry) naming every failing rule. Returns the figures."""
    try:
        results = quality.check_day(_hook(gcp_conn_id), day)
    except quality.DataQualityError as error:
        raise _fail_without_retry(error) from error
    return {"game_date": day.isoformat(), **_figures(results)}


def run_range_check(
    gcp_conn_id: str, start: dt.date, end: dt.date, band: tuple[float, float] = quality.DEFAULT_BAND
) -> dict[str, Any]:
    """The range gate; fails the task (no retry) naming every failing rule. Returns the figures."""
    try:
        results = quality.check_range(_hook(gcp_conn_id), start, end, band)
    except quality.DataQualityError as error:
        raise _fail_without_retry(error) from error
    return {"start": start.isoformat(), "end": end.isoformat(), "band": list(band), **_figures(results)}
