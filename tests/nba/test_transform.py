"""The day statement (sql/player_game_summary.sql) on crafted raw rows, on the emulator."""

from __future__ import annotations

import re

import pytest

from paceline.providers.bigquery import BigQueryError
from tests.nba._helpers import box, by_player, load, shot, summary, transform

pytestmark = pytest.mark.timeout(120)


def test_every_minutes_format_parses_and_dnp_is_null(client, fresh_day) -> None:
    cases = {
        1: ("34:12", 34.2),
        2: ("7:05", 7 + 5 / 60),  # M:SS
        3: ("07:05", 7 + 5 / 60),  # MM:SS below ten minutes
        4: ("PT25M01.00S", 25 + 1 / 60),
        5: ("PT25M", 25.0),  # minutesCalculated style, no seconds
        6: ("PT05M30.50S", 5 + 30.5 / 60),
        7: (" 12:00 ", 12.0),  # blanks around a good value are trimmed
        8: ("0:00", 0.0),  # played, zero seconds: not a DNP
        9: ("", None),  # did not play
        10: (None, None),  # did not play
        11: ("   ", None),  # blank is empty
    }
    load(client, [box(fresh_day, pid, minutes) for pid, (minutes, _) in cases.items()])
    transform(client, fresh_day)
    rows = by_player(client, fresh_day)
    assert set(rows) == set(cases)
    for pid, (minutes, expected) in cases.items():
        got = rows[pid]["minutes_played"]
        if expected is None:
            assert got is None, f"{minutes!r} -> {got}"
        else:
            assert got == pytest.approx(expected, abs=1e-9), f"{minutes!r} -> {got}"


@pytest.mark.parametrize("bad", ["34", "34:60", "abc", "25:01:00", "PT25M61.00S", "-5:00", "123:00", "PT1H2M"])
def test_malformed_minutes_fail_the_day_with_the_row(client, fresh_day, bad: str) -> None:
    load(client, [box(fresh_day, 1, "30:00"), box(fresh_day, 2, bad, game_id="0023000009")])
    with pytest.raises(BigQueryError) as failure:
        transform(client, fresh_day)
    message = str(failure.value)
    assert "minutes_format" in message
    assert f"game_id=0023000009 person_id=2 minutes='{bad}'" in message
    assert fresh_day.isoformat() in message
    assert summary(client, fresh_day) == [], "a failing day must write nothing"


def test_malformed_minutes_message_counts_all_and_shows_ten(client, fresh_day) -> None:
    good = [box(fresh_day, pid, "10:00", game_id="0023000001") for pid in range(100, 115)]  # sort first
    bad = [box(fresh_day, pid, f"x{pid}", game_id="0023000002") for pid in range(1, 13)]
    load(client, good + bad)
    with pytest.raises(BigQueryError) as failure:
        transform(client, fresh_day)
    message = str(failure.value)
    assert "minutes_format: 12 box_player row(s)" in message
    shown = set(re.findall(r"person_id=(\d+) minutes='x", message))
    assert len(shown) == 10, shown


def test_duplicate_box_rows_are_a_data_error(client, fresh_day) -> None:
    load(client, [box(fresh_day, 1, "30:00"), box(fresh_day, 1, "30:00")])
    with pytest.raises(BigQueryError) as failure:
        transform(client, fresh_day)
    assert "box_player_duplicates: 1 (game_id, person_id) key(s)" in str(failure.value)
    assert "person_id=1" in str(failure.value)


def test_a_day_reads_only_its_own_partitions(client, fresh_day) -> None:
    """Rows of the neighbouring days that would break the statement do not reach it."""
    before, after = fresh_day.replace(year=2032), fresh_day.replace(year=2033)
    load(client, [box(before, 1, "broken"), box(after, 1, "10:00"), box(after, 1, "10:00"),
                  box(fresh_day, 1, "10:00")],
         [shot(before, 1, 1, value=2, zone="Mid-Range"), shot(after, 1, 1, value=2, zone="Mid-Range")])
    transform(client, fresh_day)
    (row,) = summary(client, fresh_day)
    assert (row["player_id"], row["fga"], row["midrange_fga"]) == (1, 0, 0)


# (shot_zone_basic, shot_value, x, y, expected zone). One shot per player, so each player's zone
# counts show where that single attempt went.
ZONE_CASES = [
    # shot_zone_basic decides when present
    ("Restricted Area", 2, 0, 0, "paint"),
    ("In The Paint (Non-RA)", 2, 70, 120, "paint"),
    ("Mid-Range", 2, 150, 150, "midrange"),
    ("Left Corner 3", 3, -230, 0, "three"),
    ("Right Corner 3", 3, 230, 0, "three"),
    ("Above the Break 3", 3, 0, 260, "three"),
    ("Backcourt", 3, 0, 500, "three"),
    ("Mid-Range", None, None, None, "midrange"),  # zone alone is enough
    # Backcourt without shot_value 3 falls back to the coordinates
    ("Backcourt", None, 0, 500, "three"),
    ("Backcourt", 2, 0, 100, "paint"),
    # no usable zone: shot value 3 decides, even inside the paint
    (None, 3, 0, 0, "three"),
    ("", 3, 0, 0, "three"),
    ("Somewhere New", 3, 0, 0, "three"),
    # paint box |x| <= 80 and y <= 142.5, on and just past each edge
    (None, 2, 80, 142, "paint"),
    (None, 2, -80, -47, "paint"),
    (None, 2, 81, 142, "midrange"),
    (None, 2, -81, 0, "midrange"),
    (None, 2, 0, 143, "midrange"),
    ("", 2, 0, 142, "paint"),
    ("Unknown Zone", 2, 81, 0, "midrange"),
    # shot value 2 is authoritative: coordinates past the arc do not make it a three
    (None, 2, 0, 300, "midrange"),
    (None, 2, 230, 0, "midrange"),
    # no shot value: the coordinates stand in for it. Arc x^2 + y^2 >= 237.5^2 = 56406.25
    (None, None, 0, 238, "three"),  # 56644
    (None, None, 0, 237, "midrange"),  # 56169
    (None, None, 168, 168, "three"),  # 56448
    (None, None, 167, 168, "midrange"),  # 56113
    # corner: |x| >= 220 and y <= 92.5, inside the arc (220^2 + 89^2 = 56321 < 56406.25)
    (None, None, 220, 89, "three"),
    (None, None, -220, 0, "three"),
    (None, None, 219, 89, "midrange"),
    (None, None, 220, -47, "three"),
    (None, None, 80, 142, "paint"),
    (None, None, 0, 0, "paint"),
]


def test_zone_rules_at_their_boundaries(client, fresh_day) -> None:
    box_rows, pbp_rows = [], []
    for pid, (zone, value, x, y, _) in enumerate(ZONE_CASES, start=1):
        three = value == 3 or (value is None and _ == "three")
        box_rows.append(box(fresh_day, pid, "20:00", fga=1, fgm=1, fg3a=int(three), fg3m=int(three)))
        pbp_rows.append(shot(fresh_day, pid, pid, value=value, made=True, zone=zone, x=x, y=y))
    load(client, box_rows, pbp_rows)
    transform(client, fresh_day)
    rows = by_player(client, fresh_day)
    wrong = []
    for pid, (zone, value, x, y, expected) in enumerate(ZONE_CASES, start=1):
        got = [name for name in ("paint", "midrange", "three") if rows[pid][f"{name}_fga"] == 1]
        made = [name for name in ("paint", "midrange", "three") if rows[pid][f"{name}_fgm"] == 1]
        if got != [expected] or made != [expected]:
            wrong.append(f"zone={zone!r} value={value} ({x},{y}): expected {expected}, got {got}/{made}")
    assert not wrong, "\n".join(wrong)


def test_attempts_makes_and_non_field_goals(client, fresh_day) -> None:
    pbp = [
        shot(fresh_day, 1, 1, value=2, made=True, zone="Restricted Area", x=0, y=10),
        shot(fresh_day, 1, 2, value=2, made=False, zone="Restricted Area", x=0, y=10),
        shot(fresh_day, 1, 3, value=2, made=False, zone="Mid-Range", x=150, y=100),
        shot(fresh_day, 1, 4, value=3, made=True, zone="Above the Break 3", x=0, y=250),
        shot(fresh_day, 1, 4, value=3, made=True, zone="Above the Break 3", x=0, y=250),  # delivered twice
        shot(fresh_day, 1, 5, value=1, made=True, is_field_goal=0),  # a free throw is no FG attempt
        shot(fresh_day, 1, 6, value=None, is_field_goal=0),  # a rebound, say
        shot(fresh_day, 2, 7, value=2, made=True, zone="Mid-Range", x=100, y=100),  # not in the box: ignored
    ]
    load(client, [box(fresh_day, 1, "30:00", fga=4, fgm=2, fg3a=1, fg3m=1, fta=1, ftm=1)], pbp)
    transform(client, fresh_day)
    (row,) = summary(client, fresh_day)
    assert row["player_id"] == 1
    assert (row["paint_fga"], row["paint_fgm"]) == (2, 1)
    assert (row["midrange_fga"], row["midrange_fgm"]) == (1, 0)
    assert (row["three_fga"], row["three_fgm"]) == (1, 1)
    assert (row["fga"], row["fgm"], row["fg3a"], row["fg3m"], row["ftm"], row["points"]) == (4, 2, 1, 1, 1, 6)


def test_dnp_players_keep_a_row_with_zeros(client, fresh_day) -> None:
    dnp_null_stats = box(fresh_day, 2, None, comment="DNP - Coach's Decision")
    for name in ("fgm", "fga", "fg3m", "fg3a", "ftm", "fta", "pts"):
        dnp_null_stats[name] = None
    load(client, [box(fresh_day, 1, "", comment="DNP - Injury/Illness"), dnp_null_stats, box(fresh_day, 3, "40:00")])
    transform(client, fresh_day)
    rows = by_player(client, fresh_day)
    assert set(rows) == {1, 2, 3}
    for pid in (1, 2):
        row = rows[pid]
        assert row["minutes_played"] is None
        counts = {k: v for k, v in row.items() if k not in ("game_date", "game_id", "player_id", "team_id", "minutes_played")}
        assert set(counts.values()) == {0}, counts


def test_rerun_is_idempotent_and_follows_raw(client, fresh_day) -> None:
    other_day = fresh_day.replace(year=2031)
    load(client, [box(other_day, 7, "12:00")])
    transform(client, other_day)
    load(client, [box(fresh_day, 1, "30:00", fga=1, fgm=1), box(fresh_day, 2, "")],
         [shot(fresh_day, 1, 1, value=2, made=True, zone="Mid-Range")])
    first = transform(client, fresh_day)
    before = summary(client, fresh_day)
    second = transform(client, fresh_day)
    assert summary(client, fresh_day) == before
    assert first.num_dml_affected_rows == second.num_dml_affected_rows == 2
    # a player who leaves the day's box score leaves the summary; other days are untouched
    client.query(
        "DELETE FROM nba_raw.box_player WHERE game_date = @d AND person_id = 2", {"d": fresh_day}
    )
    transform(client, fresh_day)
    assert [row["player_id"] for row in summary(client, fresh_day)] == [1]
    assert [row["player_id"] for row in summary(client, other_day)] == [7]


def test_day_without_games_writes_nothing(client, fresh_day) -> None:
    job = transform(client, fresh_day)
    assert job.num_dml_affected_rows == 0
    assert summary(client, fresh_day) == []

