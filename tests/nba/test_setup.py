"""Set-up of nba_analytics.player_game_summary: idempotent, never drops, refuses a wrong shape."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from paceline.cli import main as cli_main
from paceline.nba import setup
from paceline.nba.settings import DEFAULTS, SettingsError, from_json
from paceline.providers.bigquery import Table
from tests.nba._helpers import DROP_SUMMARY, box, load, summary, transform

pytestmark = pytest.mark.timeout(120)

COLUMNS = """
SELECT column_name FROM nba_analytics.INFORMATION_SCHEMA.COLUMNS
WHERE table_name = 'player_game_summary' ORDER BY ordinal_position
"""


def _drop_summary(client) -> None:
    client.query(DROP_SUMMARY)


def test_setup_creates_the_partitioned_table_once_and_keeps_rows(client, fresh_day) -> None:
    _drop_summary(client)
    created = setup.ensure_summary_table(client)
    assert created.table_created and not created.dataset_created
    table = client.get_table("nba_analytics.player_game_summary")
    assert (table.partition_type, table.partition_field) == ("DAY", "game_date")
    columns = client.query(COLUMNS).rows
    assert [c["column_name"] for c in columns][:3] == ["game_date", "game_id", "player_id"]
    load(client, [box(fresh_day, 1, "30:00")])
    transform(client, fresh_day)
    again = setup.ensure_summary_table(client)
    assert not again.table_created and not again.dataset_created
    assert [row["player_id"] for row in summary(client, fresh_day)] == [1]  # nothing dropped


def test_setup_creates_the_dataset_in_the_raw_location(client) -> None:
    _drop_summary(client)
    client.query("DROP SCHEMA IF EXISTS nba_analytics CASCADE")
    assert client.dataset_location("nba_analytics") is None
    created = setup.ensure_summary_table(client)
    assert created.dataset_created and created.table_created
    assert created.location == client.dataset_location("nba_raw") is not None
    assert client.dataset_location("nba_analytics") == created.location


def test_a_table_partitioned_otherwise_is_refused() -> None:
    name = "nba_analytics.player_game_summary"
    with pytest.raises(setup.SetupError, match="not day-partitioned on game_date"):
        setup.verify_summary_table(Table(name, None, None, None))
    with pytest.raises(setup.SetupError, match="paceline nba setup"):
        setup.verify_summary_table(Table(name, "MONTH", "game_date", None))
    assert setup.verify_summary_table(Table(name, "DAY", "game_date", ["game_id", "player_id"])) == ()
    assert "expected game_id, player_id" in setup.verify_summary_table(Table(name, "DAY", "game_date", ["player_id"]))[0]


def test_cli_setup_is_idempotent(client, emulator, capsys) -> None:
    _drop_summary(client)
    assert cli_main(["nba", "setup"]) == 0
    assert "created table" in capsys.readouterr().out
    assert cli_main(["nba", "setup"]) == 0
    assert "already in place" in capsys.readouterr().out


def test_settings_defaults_overrides_and_refusals() -> None:
    assert from_json(None) == DEFAULTS and from_json("") == DEFAULTS
    assert (DEFAULTS.null_share_band, DEFAULTS.null_share_fail_above, DEFAULTS.min_zone_coverage) == (
        (0.35, 0.45), 0.60, 0.85)
    assert DEFAULTS.row_count_range == (110_000, 160_000)
    custom = from_json(json.dumps({"min_zone_coverage": "0.9", "reread_days": 3, "ready_at": "07:30"}))
    assert (custom.min_zone_coverage, custom.reread_days, custom.ready_time()) == (0.9, 3, dt.time(7, 30))
    with pytest.raises(SettingsError, match=r"unknown NBA setting\(s\) \['zone'\]; valid: "):
        from_json('{"zone": 1}')
    with pytest.raises(SettingsError, match="null_share_pass_high <= null_share_fail_above"):
        from_json('{"null_share_fail_above": 0.4}')
    with pytest.raises(SettingsError, match="not JSON"):
        from_json("{min_zone_coverage: 1}")
    with pytest.raises(SettingsError, match="ready_at must be HH:MM"):
        from_json('{"ready_at": "6am"}')
