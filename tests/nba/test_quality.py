"""The quality gate: each rule passing on the seed and failing, with its figure and rows, on bad data."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from paceline.nba import quality
from paceline.nba.settings import DEFAULTS
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
    assert set(by_rule) == {"null_minutes_share", "zone_coverage", "zone_sum", "three_equals_fg3",
                            "points_identity", "null_minutes_with_stats", "completeness"}
    assert {r.status for r in results} == {"pass"}
    assert 0.35 <= by_rule["null_minutes_share"].value <= 0.45
    assert by_rule["zone_coverage"].value == 1.0


def test_seeded_days_pass_the_day_gate_including_days_without_games(client, built_small) -> None:
    assert all(r.passed for r in quality.check_day(client, dt.date(2022, 2, 10)))
    no_games = quality.check_day(client, dt.date(2022, 2, 20))  # All-Star Sunday
    share = next(r for r in no_games if r.rule == "null_minutes_share")
    assert share.passed and share.figure == "no rows (no games)"


def test_outside_the_pass_band_warns_with_the_worst_days(client, built_small) -> None:
    results = quality.check_range(client, *built_small, band=(0.50, 0.55))
    share = next(r for r in results if r.rule == "null_minutes_share")
    assert share.status == "warn" and share.passed
    assert re.search(r"NULL minutes_played share \d+\.\d% \(\d+ of \d+ rows\), below the pass band 50%-55%",
                     share.figure)
    assert 0 < len(share.rows) <= 10
    (note,) = quality.warnings(results)
    assert note.startswith("null_minutes_share: ")


def test_null_share_pass_warn_fail_thresholds(client, fresh_day) -> None:
    """10 players a day: 4 DNP pass; 5 and 6 (60% exactly) warn; 7 fail."""
    expected = {4: "pass", 5: "warn", 6: "warn", 7: "fail"}
    day = fresh_day
    for dnp, status in expected.items():
        load(client, [box(day, pid, None) for pid in range(1, dnp + 1)]
             + [box(day, pid, "30:00") for pid in range(dnp + 1, 11)])
        transform(client, day)
        share = next(r for r in quality.run_checks(client, day, day, single_day=True)
                     if r.rule == "null_minutes_share")
        assert share.status == status, (dnp, share.figure)
        day = day.replace(year=day.year + 10)
    custom = DEFAULTS.with_overrides({"null_share_fail_above": 0.5})
    with pytest.raises(quality.DataQualityError, match=r"60.0% \(6 of 10 rows\), above 50%: the minutes parser"):
        quality.check_day(client, day.replace(year=day.year - 20), settings=custom)


def test_full_range_row_count(client, built_small) -> None:
    start, end = built_small
    (rows,) = client.query(
        "SELECT COUNT(*) AS n FROM nba_analytics.player_game_summary WHERE game_date BETWEEN @s AND @e",
        {"s": start, "e": end}).rows
    n = rows["n"]
    ok = {r.rule: r for r in quality.check_range(client, start, end, expected_rows=(n, n + 1))}
    assert ok["row_count"].status == "pass" and ok["row_count"].value == n
    with pytest.raises(quality.DataQualityError, match=rf"rule row_count: FAILED: {n:,} rows, expected 110,000-160,000"):
        quality.check_range(client, start, end, expected_rows=DEFAULTS.row_count_range)
    assert "row_count" not in {r.rule for r in quality.check_range(client, start, end)}  # not the full range


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


def test_zone_identities_inform_and_coverage_decides(client, fresh_day) -> None:
    # 10 attempts of which the play-by-play places 9 (90%): passes, the identities only inform
    players = [box(fresh_day, pid, "30:00", fga=1) for pid in range(1, 10)]
    players.append(box(fresh_day, 10, "30:00", fga=1, fg3a=1))
    shots = [shot(fresh_day, pid, pid, value=2, zone="Mid-Range", x=150, y=100) for pid in range(1, 9)]
    shots.append(shot(fresh_day, 9, 9, value=None, zone=None, x=None, y=None))  # no way to place it
    shots.append(shot(fresh_day, 10, 10, value=2, zone="Mid-Range", x=150, y=100))  # box says a three
    load(client, players, shots)
    transform(client, fresh_day)
    results = {r.rule: r for r in quality.check_day(client, fresh_day)}
    assert results["zone_coverage"].status == "pass" and results["zone_coverage"].value == 0.9
    assert results["zone_sum"].status == "info" and [r["player_id"] for r in results["zone_sum"].rows] == [9]
    assert results["three_equals_fg3"].status == "info"
    assert [r["player_id"] for r in results["three_equals_fg3"].rows] == [10]
    strict = DEFAULTS.with_overrides({"min_zone_coverage": 0.95})
    with pytest.raises(quality.DataQualityError) as failure:
        quality.check_day(client, fresh_day, settings=strict)
    (failed,) = failure.value.failures
    assert failed.rule == "zone_coverage"
    assert "90.0% of 10 field-goal attempts placed in a shot zone, below 95%" in failed.figure


def test_day_gate_catches_the_parser_failure_mode(client, fresh_day) -> None:
    rows = [box(fresh_day, pid, None) for pid in range(1, 8)] + [box(fresh_day, pid, "30:00") for pid in (8, 9, 10)]
    rows[0] = box(fresh_day, 1, "", fga=3, fgm=1)  # stats but no minutes
    load(client, rows, [shot(fresh_day, 1, n, value=2, made=n == 1, zone="Mid-Range") for n in (1, 2, 3)])
    transform(client, fresh_day)
    with pytest.raises(quality.DataQualityError) as failure:
        quality.check_day(client, fresh_day)
    failed = {r.rule: r for r in failure.value.failures}
    assert set(failed) == {"null_minutes_share", "null_minutes_with_stats"}
    assert "70.0% (7 of 10 rows), above 60%: the minutes parser is broken" in failed["null_minutes_share"].figure
    assert [row["player_id"] for row in failed["null_minutes_with_stats"].rows] == [1]


def test_completeness_reports_days_not_built(client, fresh_day) -> None:
    load(client, [box(fresh_day, 1, "30:00"), box(fresh_day, 2, "")])
    with pytest.raises(quality.DataQualityError) as failure:
        quality.check_range(client, fresh_day, fresh_day, band=(0.0, 1.0))
    failed = {r.rule: r for r in failure.value.failures}
    assert "completeness" in failed
    assert failed["completeness"].rows[0]["box_players"] == 2
    assert failed["completeness"].rows[0]["summary_rows"] == 0


def test_checks_run_through_the_airflow_connection(emulator, built_small, airflow_db) -> None:
    """What a task does: the client from google_cloud_default (anonymous, BIGQUERY_EMULATOR_HOST)."""
    from paceline.providers.bigquery import BigQueryRestHook

    client = BigQueryRestHook("google_cloud_default").get_client()
    assert client.project == emulator.project and client.session.base_url == emulator.url
    assert all(r.passed for r in quality.check_range(client, *built_small))


def test_cli_check_passes_warns_and_fails_on_the_row_count(client, built_small, emulator, capsys) -> None:
    from paceline.cli import main as cli_main

    start, end = (d.isoformat() for d in built_small)
    assert cli_main(["nba", "check", "--start", start, "--end", end]) == 0
    assert "rule zone_coverage: passed" in capsys.readouterr().out
    assert cli_main(["nba", "check", "--start", start, "--end", end, "--band-low", "0.5", "--band-high", "0.55"]) == 0
    assert "WARNING (passes with a note): null_minutes_share" in capsys.readouterr().err
    assert cli_main(["nba", "check", "--start", start, "--end", end, "--rows", "110000", "160000"]) == 1
    assert "rule row_count: FAILED" in capsys.readouterr().err


def test_sql_files_name_no_parameter_in_a_comment() -> None:
    """The emulator counts an ``@name`` in a ``--`` comment as a parameter and refuses the query
    ("Parameter argument/count mismatch"); BigQuery does not mind. Keep comments free of them."""
    from paceline.nba import SQL_DIR

    offending = [f"{path.relative_to(SQL_DIR)}:{n}" for path in sorted(SQL_DIR.rglob("*.sql"))
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if "--" in line and "@" in line.split("--", 1)[1]]
    assert offending == []
