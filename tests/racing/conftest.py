"""Fixtures of the racing tests: a Racing API stand-in on loopback, its Airflow connection, clean tables."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import date, timedelta

import psycopg
import pytest

from paceline.http.limiter import per_second
from paceline.http.session import RetryPolicy
from paceline.providers.racing_api.client import RacingApiClient
from paceline.providers.racing_api.hook import RacingApiHook
from paceline.sandbox.base import Knobs, serve
from paceline.sandbox.racing_api import build

JAN_2024 = [date(2024, 1, 1) + timedelta(days=i) for i in range(31)]
RACING_TABLES = (
    "racing.ra_mst_regions, racing.ra_mst_courses, racing.ra_mst_bookmakers, racing.ra_mst_horses, "
    "racing.ra_mst_jockeys, racing.ra_mst_trainers, racing.ra_mst_owners, racing.ra_mst_sires, "
    "racing.ra_mst_dams, racing.ra_mst_damsires, racing.ra_races, racing.ra_runners, racing.ra_horse_pedigree"
)
FAST_RETRY = RetryPolicy(base_s=0.01, max_s=0.05, throttle_wait_s=0.01, throttle_max_wait_s=60)


@pytest.fixture
def racing_db(warehouse: str) -> str:
    """The warehouse with the racing tables emptied."""
    with psycopg.connect(warehouse, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {RACING_TABLES}")  # noqa: S608 - constant table list
    return warehouse


@pytest.fixture
def standin():
    """A fresh small-scale stand-in (instant to build), unthrottled unless a test says otherwise."""
    return build("small", seed=7, knobs=Knobs(per_second=1000.0, seed=7))


@pytest.fixture
def racing_api(standin) -> Iterator[object]:
    """The stand-in served on loopback, with AIRFLOW_CONN_RACING_API (type http) pointing at it."""
    server = serve(standin)
    cred = standin.credentials()[0]
    previous = os.environ.get("AIRFLOW_CONN_RACING_API")
    os.environ["AIRFLOW_CONN_RACING_API"] = json.dumps(
        {"conn_type": "http", "host": server.url, "login": cred["login"], "password": cred["password"]}
    )
    yield server
    server.stop()
    if previous is None:
        os.environ.pop("AIRFLOW_CONN_RACING_API", None)
    else:
        os.environ["AIRFLOW_CONN_RACING_API"] = previous


def fast_client(use_limiter: bool = False, rate: float = 500.0) -> RacingApiClient:
    """A client with tiny retry waits; no shared limiter unless asked (rate is not the subject)."""
    hook = RacingApiHook(rates=(per_second(rate),), use_limiter=use_limiter, retry=FAST_RETRY)
    return RacingApiClient(hook)
