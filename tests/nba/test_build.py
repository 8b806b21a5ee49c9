"""Building a day: when it is ready, which days a run builds, and the guard that keeps a day's
rows when its raw partitions are empty or incomplete (on the emulator)."""

from __future__ import annotations

import datetime as dt

import pytest

from paceline.nba import build
from paceline.nba.settings import DEFAULTS
from tests.nba._helpers import box, load, shot, summary

pytestmark = pytest.mark.timeout(120)

DELETE_BOX_DAY = "DELETE FROM nba_raw.box_player WHERE game_date = @game_date"
DELETE_BOX_GAME = "DELETE FROM nba_raw.box_player WHERE game_date = @game_date AND game_id = '0023000002'"
DELETE_PBP_DAY = "DELETE FROM nba_raw.pbp_actions WHERE game_date = @game_date"


def _two_games(day: dt.date) -> tuple[list[dict], list[dict]]:
    box_rows = [box(day, 1, "30:00", fga=1, fgm=1), box(day, 2, ""),
                box(day, 3, "20:00", fga=1, game_id="0023000002"), box(day, 4, "", game_id="0023000002")]
    pbp_rows = [shot(day, 1, 1, value=2, made=True, zone="Mid-Range"),
                shot(day, 3, 2, value=2, zone="Restricted Area", game_id="0023000002")]
    return box_rows, pbp_rows


def test_ready_time_is_next_morning_league_time_across_dst() -> None:
    assert build.ready_at(dt.date(2022, 1, 10), DEFAULTS) == dt.datetime(2022, 1, 11, 11, tzinfo=dt.UTC)
    # the night the clocks go forward: 06:00 EDT is 10:00 UTC
    assert build.ready_at(dt.date(2022, 3, 12), DEFAULTS) == dt.datetime(2022, 3, 13, 10, tzinfo=dt.UTC)


def test_scheduled_runs_reread_the_days_before_theirs_backfills_do_not() -> None:
    day = dt.date(2023, 1, 10)
    assert build.days_to_build(day, "scheduled", DEFAULTS) == [dt.date(2023, 1, 8), dt.date(2023, 1, 9), day]
    assert build.days_to_build(day, "backfill", DEFAULTS) == [day]
    assert build.days_to_build(day, "manual", DEFAULTS) == [day]


def test_a_day_not_over_yet_goes_up_for_reschedule_until_ready(emulator) -> None:
    from airflow.sdk.exceptions import AirflowRescheduleException

    from paceline.nba.tasks import build_and_check_day

    day = dt.date(2023, 1, 10)
    just_before = dt.datetime(2023, 1, 11, 10, 59, tzinfo=dt.UTC)  # 05:59 in New York
    with pytest.raises(AirflowRescheduleException) as wait:
        build_and_check_day("google_cloud_default", day, "scheduled", now=just_before)
    assert wait.value.reschedule_date == dt.datetime(2023, 1, 11, 11, tzinfo=dt.UTC)


def test_an_emptied_raw_partition_fails_loudly_and_keeps_the_rows(client, fresh_day) -> None:
    load(client, *_two_games(fresh_day))
    assert build.build_day(client, fresh_day).rows_affected == 4
    before = summary(client, fresh_day)
    client.query(DELETE_BOX_DAY, {"game_date": fresh_day})
    with pytest.raises(build.RawPartitionIncomplete) as refused:
        build.build_day(client, fresh_day)
    message = str(refused.value)
    assert f"refusing to rebuild {fresh_day}" in message
    assert "2 game(s) with 4 summary row(s) are not in nba_raw.box_player" in message
    assert "0023000001, 0023000002" in message and "clear this task" in message
    assert summary(client, fresh_day) == before


def test_a_half_reloaded_partition_keeps_the_missing_game(client, fresh_day) -> None:
    load(client, *_two_games(fresh_day))
    build.build_day(client, fresh_day)
    before = summary(client, fresh_day)
    client.query(DELETE_BOX_GAME, {"game_date": fresh_day})
    with pytest.raises(build.RawPartitionIncomplete, match=r"1 game\(s\) with 2 summary row\(s\).*0023000002"):
        build.build_day(client, fresh_day)
    assert summary(client, fresh_day) == before


def test_missing_play_by_play_does_not_zero_the_zones(client, fresh_day) -> None:
    load(client, *_two_games(fresh_day))
    build.build_day(client, fresh_day)
    before = summary(client, fresh_day)
    client.query(DELETE_PBP_DAY, {"game_date": fresh_day})
    with pytest.raises(build.RawPartitionIncomplete, match=r"no play-by-play shots: 0023000001 \(1 FGA\)"):
        build.build_day(client, fresh_day)
    assert summary(client, fresh_day) == before


def test_a_player_leaving_a_present_game_is_still_removed(client, fresh_day) -> None:
    load(client, *_two_games(fresh_day))
    build.build_day(client, fresh_day)
    client.query("DELETE FROM nba_raw.box_player WHERE game_date = @game_date AND person_id = 4",
                 {"game_date": fresh_day})
    build.build_day(client, fresh_day)
    assert [row["player_id"] for row in summary(client, fresh_day)] == [1, 2, 3]


def test_a_day_without_games_builds_nothing(client, fresh_day) -> None:
    assert build.build_day(client, fresh_day).rows_affected == 0
    assert summary(client, fresh_day) == []
