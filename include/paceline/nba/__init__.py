"""NBA player_game_summary on BigQuery: one game day per run, SQL in ``sql/``.

The names here are the contract's (docs/contract.md): datasets, tables, DAG id and the Asset that
downstream consumers schedule on.
"""

from __future__ import annotations

from pathlib import Path

SQL_DIR = Path(__file__).resolve().parent / "sql"

DAG_ID = "nba_player_game_summary"
QUALITY_DAG_ID = "nba_quality_check"
RAW_DATASET = "nba_raw"
ANALYTICS_DATASET = "nba_analytics"
BOX_TABLE = f"{RAW_DATASET}.box_player"
PBP_TABLE = f"{RAW_DATASET}.pbp_actions"
SUMMARY_TABLE = f"{ANALYTICS_DATASET}.player_game_summary"
TRANSFORM_SQL = "player_game_summary.sql"

# Emitted only by a day whose quality checks passed. "paceline" stands for the project, which
# the connection decides (paceline-local on the emulator).
ASSET_NAME = "nba_player_game_summary"
ASSET_URI = "bigquery://paceline/nba_analytics/player_game_summary"

# The pool of every BigQuery task (config/pools.json): lower its slots to spare BigQuery's quotas.
POOL = "bigquery"


def sql_text(name: str) -> str:
    """The text of a file under ``sql/`` (e.g. ``"checks/zone_sum.sql"``)."""
    return (SQL_DIR / name).read_text()
