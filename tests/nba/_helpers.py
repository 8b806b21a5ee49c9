"""Crafted raw rows and a way to run the real day statement on them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from paceline.nba import BOX_TABLE, PBP_TABLE, TRANSFORM_SQL, sql_text
from paceline.sandbox import bigquery as sb

SUMMARY_FOR_DAY = """
SELECT * FROM nba_analytics.player_game_summary
WHERE game_date = @game_date
ORDER BY game_id, player_id
"""


RAW_BOX_COUNT = "SELECT COUNT(*) AS n FROM nba_raw.box_player WHERE game_date = @game_date"
DELETE_SUMMARY_DAY = "DELETE FROM nba_analytics.player_game_summary WHERE game_date = @game_date"
DROP_SUMMARY = "DROP TABLE IF EXISTS nba_analytics.player_game_summary"


def raw_box_count(client: Any, day: dt.date) -> int:
    (row,) = client.query(RAW_BOX_COUNT, {"game_date": day}).rows
    return row["n"]


def delete_summary(client: Any, day: dt.date) -> None:
    client.query(DELETE_SUMMARY_DAY, {"game_date": day})


def box(day: dt.date, person_id: int, minutes: str | None, game_id: str = "0023000001", **stats: Any) -> dict:
    """A box-score row; counting stats default to 0 and points follow the identity unless given."""
    row = {"game_date": day, "game_id": game_id, "team_id": 1610612737, "person_id": person_id,
           "first_name": "Test", "family_name": f"Player{person_id}", "minutes": minutes}
    for name in ("fgm", "fga", "fg3m", "fg3a", "ftm", "fta"):
        row[name] = stats.pop(name, 0)
    row["pts"] = stats.pop("pts", 2 * (row["fgm"] - row["fg3m"]) + 3 * row["fg3m"] + row["ftm"])
    row.update(stats)
    return row


def shot(day: dt.date, person_id: int, action_number: int, *, value: int | None, made: bool = False,
         zone: str | None = None, x: int | None = None, y: int | None = None,
         game_id: str = "0023000001", is_field_goal: int = 1) -> dict:
    return {"game_date": day, "game_id": game_id, "action_number": action_number, "period": 1,
            "clock": "PT10M00.00S", "team_id": 1610612737, "person_id": person_id,
            "action_type": "Made Shot" if made else "Missed Shot", "sub_type": "Jump Shot",
            "shot_result": "Made" if made else "Missed", "is_field_goal": is_field_goal,
            "shot_value": value, "x_legacy": x, "y_legacy": y, "shot_zone_basic": zone}


def load(client: Any, box_rows: list[dict], pbp_rows: list[dict] | None = None) -> None:
    if box_rows:
        sb.load_rows(client, BOX_TABLE, box_rows)
    if pbp_rows:
        sb.load_rows(client, PBP_TABLE, pbp_rows)


def transform(client: Any, day: dt.date) -> Any:
    """Run the DAG's day statement, as the task sends it: the file and a DATE parameter."""
    return client.query(sql_text(TRANSFORM_SQL), {"game_date": day})


def summary(client: Any, day: dt.date) -> list[dict]:
    return client.query(SUMMARY_FOR_DAY, {"game_date": day}).rows


def by_player(client: Any, day: dt.date) -> dict[int, dict]:
    return {row["player_id"]: row for row in summary(client, day)}
