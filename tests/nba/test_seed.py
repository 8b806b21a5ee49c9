"""The deterministic NBA raw-data seed and the emulator process around it."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter

import pytest

from paceline.sandbox import bigquery as sb

pytestmark = pytest.mark.timeout(180)

BOX = {name: i for i, name in enumerate(sb.BOX_COLUMNS)}
PBP = {name: i for i, name in enumerate(sb.PBP_COLUMNS)}


def _small_rows() -> tuple[list[tuple], list[tuple]]:
    box, pbp = [], []
    start, end = sb.SCALES["small"]
    day = start
    while day <= end:
        b, p = sb.generate_day(day)
        box += b
        pbp += p
        day += dt.timedelta(days=1)
    return box, pbp


def test_generation_is_deterministic_per_day_and_seed() -> None:
    day = dt.date(2023, 1, 15)
    assert sb.generate_day(day, 7) == sb.generate_day(day, 7)
    assert sb.generate_day(day, 7) != sb.generate_day(day, 8)


@pytest.mark.parametrize("day", [
    dt.date(2022, 7, 15),  # off-season
    dt.date(2021, 10, 1),  # before opening night
    dt.date(2022, 2, 19),  # All-Star weekend
    dt.date(2021, 12, 24),
    dt.date(2021, 11, 25),  # Thanksgiving
])
def test_days_without_games_have_no_rows(day: dt.date) -> None:
    assert sb.generate_day(day) == ([], [])


def test_identities_hold_by_construction() -> None:
    box, pbp = _small_rows()
    attempts = Counter((r[PBP["game_id"]], r[PBP["person_id"]]) for r in pbp if r[PBP["is_field_goal"]] == 1)
    makes = Counter((r[PBP["game_id"]], r[PBP["person_id"]]) for r in pbp
                    if r[PBP["is_field_goal"]] == 1 and r[PBP["shot_result"]] == "Made")
    for row in box:
        fgm, fg3m, ftm, pts = (row[BOX[k]] or 0 for k in ("fgm", "fg3m", "ftm", "pts"))
        assert pts == 2 * (fgm - fg3m) + 3 * fg3m + ftm
        key = (row[BOX["game_id"]], row[BOX["person_id"]])
        assert (row[BOX["fga"]] or 0) == attempts[key]
        assert fgm == makes[key]
    # box-score keys are unique
    assert len({(r[BOX["game_id"]], r[BOX["person_id"]]) for r in box}) == len(box)


def test_the_rows_cover_every_case_the_transformation_handles() -> None:
    box, pbp = _small_rows()
    minutes = [r[BOX["minutes"]] for r in box]
    dnp = sum(1 for m in minutes if not m)
    assert 0.35 <= dnp / len(minutes) <= 0.45
    assert None in minutes and "" in minutes
    assert any(m and re.fullmatch(r"\d:\d\d", m) for m in minutes)  # M:SS
    assert any(m and re.fullmatch(r"\d\d:\d\d", m) for m in minutes)  # MM:SS
    assert any(m and m.startswith("0") and ":" in m for m in minutes)  # zero-padded
    assert any(m and re.fullmatch(r"PT\d\dM\d\d\.\d\dS", m) for m in minutes)
    shots = [r for r in pbp if r[PBP["is_field_goal"]] == 1]
    zones = Counter(r[PBP["shot_zone_basic"]] for r in shots)
    assert zones[None] and zones[""] and zones["Backcourt"]
    assert {"Restricted Area", "In The Paint (Non-RA)", "Mid-Range", "Left Corner 3", "Right Corner 3",
            "Above the Break 3"} <= set(zones)
    assert any(r[PBP["shot_value"]] is None and r[PBP["shot_zone_basic"]] is None for r in shots)
    points = {(r[PBP["x_legacy"]], r[PBP["y_legacy"]]) for r in shots}
    assert {(80, 142), (81, 0), (0, 238), (0, 237), (220, 92)} & points


def test_small_seed_loads_and_is_idempotent(client, small_seed) -> None:
    assert small_seed.game_days == 12 and small_seed.days == 18
    again = sb.seed_scale(client, "small")
    assert (again.box_rows, again.pbp_rows) == (small_seed.box_rows, small_seed.pbp_rows)
    (count,) = client.query(
        "SELECT COUNT(*) AS n FROM nba_raw.box_player WHERE game_date BETWEEN '2022-02-10' AND '2022-02-27'"
    ).rows
    assert count["n"] == small_seed.box_rows


def test_full_seed_scale_loads_every_day(tmp_path) -> None:
    if not sb.emulator_available():
        pytest.skip("BigQuery emulator venv missing: run scripts/setup-bq-emulator.sh")
    with sb.start_emulator(tmp_path / "bq", persistent=False) as emulator:
        stats = sb.seed_scale(emulator.client(), "seed")
    assert stats.days == 944 and stats.game_days > 500
    assert stats.box_rows > 100_000 and stats.pbp_rows > 800_000


def test_emulator_process_lifecycle(tmp_path) -> None:
    if not sb.emulator_available():
        pytest.skip("BigQuery emulator venv missing: run scripts/setup-bq-emulator.sh")
    emulator = sb.start_emulator(tmp_path / "bq")  # persistent, spatial extension absent: still starts
    try:
        assert emulator.url.startswith("http://127.0.0.1:")
        found = sb.find_running(tmp_path / "bq")
        assert found is not None and found.url == emulator.url and found.pid == emulator.pid
        sb.ensure_schema(emulator.client())
        sb.ensure_schema(emulator.client())  # idempotent
        tables = {t.table_id for t in emulator.client().list_tables("nba_raw")}
        assert tables == {"box_player", "pbp_actions"}
        summary = emulator.client().get_table("nba_analytics.player_game_summary")
        assert summary.time_partitioning.field == "game_date"
    finally:
        emulator.stop()
    assert not emulator.is_alive()
    assert sb.find_running(tmp_path / "bq") is None
