"""The quality gate: each rule passing on the seed and failing, with its figure and rows, on bad data."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from paceline.nba import quality
from paceline.sandbox import bigquery as sb
from tests.nba._helpers import box, load, shot, transform

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def built_small(client, small_seed) -> tuple[dt.date, dt.date]:
    """Every day of the small scale transformed, as a finished backfill leaves it."""
    start, end = sb.SCALES["small"]
    day = start
    while day <= end:
        transform(client, day)
        day += dt.timedelta(days=1)
    return start, end


def test_seeded_range_passes_every_rule_within_the_band(client, built_small) -> None:
    results = quality.check_range(client, *built_small)
    by_rule = {r.rule: r for r in results}
    assert set(by_rule) == {"null_minutes_share", "zone_sum", "three_equals_fg3", "points_identity",
                            "null_minutes_with_stats", "completeness"}
    assert all(r.passed for r in results)
    assert 0.35 <= by_rule["null_minutes_share"].value <= 0.45


def test_seeded_days_pass_the_day_gate_including_days_without_games(client, built_small) -> None:
    assert all(r.passed for r in quality.check_day(client, dt.date(2022, 2, 10)))
    no_games = quality.check_day(client, dt.date(2022, 2, 20))  # All-Star Sunday
    share = next(r for r in no_games if r.rule == "null_minutes_share")
    assert share.passed and share.figure == "no rows (no games)"


def test_band_failure_names_rule_figure_and_worst_days(client, built_small) -> None:
    with pytest.raises(quality.DataQualityError) as failure:
        quality.check_range(client, *built_small, band=(0.50, 0.60))
    message = str(failure.value)
    assert "rule null_minutes_share: FAILED" in message
    assert re.search(r"NULL minutes_played share \d+\.\d% \(\d+ of \d+ rows\), band 50%-60%", message)
    assert "offending rows (first 10)" in message
    assert [r.rule for r in failure.value.failures] == ["null_minutes_share"]
    assert 0 < len(failure.value.failures[0].rows) <= 10


def test_range_gate_refuses_an_empty_range_and_bad_arguments(client) -> None:
    with pytest.raises(quality.DataQualityError, match="no rows in player_game_summary"):
        quality.check_range(client, dt.date(1999, 1, 1), dt.date(1999, 1, 31))
    with pytest.raises(ValueError):
        quality.check_range(client, dt.date(2022, 2, 2), dt.date(2022, 2, 1))
    with pytest.raises(ValueError):
        quality.check_range(client, dt.date(2022, 2, 1), dt.date(2022, 2, 2), band=(0.5, 0.4))


def test_points_identity_failure_shows_count_and_ten_rows(client, fresh_day) -> None:
    load(client, [box(fresh_day, pid, "20:00", ftm=2, fta=2, pts=3) for pid in range(1, 13)])
    transform(client, fresh_day)
    with pytest.raises(quality.DataQualityError) as failure:
        quality.check_day(client, fresh_day)
    (result,) = failure.value.failures
    assert result.rule == "points_identity"
    assert "violated by 12 of 12 rows" in result.figure
    assert len(result.rows) == 10
    assert "expected_points=2" in str(failure.value) and "points=3" in str(failure.value)


def test_zone_and_three_rules_catch_inconsistent_raw(client, fresh_day) -> None:
    load(
        client,
        [box(fresh_day, 1, "30:00", fga=1), box(fresh_day, 2, "30:00", fga=1, fg3a=1)],
        [
            shot(fresh_day, 1, 1, value=None, zone=None, x=None, y=None),  # no way to place it
            shot(fresh_day, 2, 2, value=2, zone="Mid-Range", x=150, y=100),  # box says it was a three
        ],
    )
    transform(client, fresh_day)
    with pytest.raises(quality.DataQualityError) as failure:
        quality.check_day(client, fresh_day)
    failed = {r.rule: r for r in failure.value.failures}
    assert set(failed) == {"zone_sum", "three_equals_fg3"}
    assert [row["player_id"] for row in failed["zone_sum"].rows] == [1]
    assert [row["player_id"] for row in failed["three_equals_fg3"].rows] == [2]


def test_day_gate_catches_the_parser_failure_mode(client, fresh_day) -> None:
    rows = [box(fresh_day, pid, None) for pid in range(1, 8)] + [box(fresh_day, pid, "30:00") for pid in (8, 9, 10)]
    rows[0] = box(fresh_day, 1, "", fga=3, fgm=1)  # stats but no minutes
    load(client, rows, [shot(fresh_day, 1, n, value=2, made=n == 1, zone="Mid-Range") for n in (1, 2, 3)])
    transform(client, fresh_day)
    with pytest.raises(quality.DataQualityError) as failure:
        quality.check_day(client, fresh_day)
    failed = {r.rule: r for r in failure.value.failures}
    assert set(failed) == {"null_minutes_share", "null_minutes_with_stats"}
    assert "70.0% (7 of 10 rows), parser failure above 60%" in failed["null_minutes_share"].figure
    assert [row["player_id"] for row in failed["null_minutes_with_stats"].rows] == [1]


def test_completeness_reports_days_not_built(client, fresh_day) -> None:
    load(client, [box(fresh_day, 1, "30:00"), box(fresh_day, 2, "")])
    with pytest.raises(quality.DataQualityError) as failure:
        quality.check_range(client, fresh_day, fresh_day, band=(0.0, 1.0))
    failed = {r.rule: r for r in failure.value.failures}
    assert "completeness" in failed
    assert failed["completeness"].rows[0]["box_players"] == 2
    assert failed["completeness"].rows[0]["summary_rows"] == 0


def test_checks_accept_an_airflow_bigquery_hook(emulator, built_small, airflow_db) -> None:
    from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook

    hook = BigQueryHook(gcp_conn_id="google_cloud_default", use_legacy_sql=False)
    assert all(r.passed for r in quality.check_range(hook, *built_small))
