"""Idempotent set-up of ``nba_analytics.player_game_summary`` on BigQuery (real or emulator).

``ensure_summary_table`` creates what is missing and never drops or alters anything: the
dataset (in the location of ``nba_raw`` when that exists, since a query cannot join datasets of
two locations), then the table, day-partitioned on ``game_date`` and clustered by
``(game_id, player_id)``, from ``sql/ddl/player_game_summary.sql``. An existing table partitioned
otherwise is refused with what to do, rather than written into. Run by every ``transform_day``
(one metadata call when the table exists) and by ``python -m paceline nba setup``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from paceline.nba import ANALYTICS_DATASET, RAW_DATASET, SUMMARY_TABLE, sql_text

if TYPE_CHECKING:
    from paceline.providers.bigquery import BigQueryClient, Table

log = logging.getLogger(__name__)

SUMMARY_DDL = "ddl/player_game_summary.sql"
RAW_DDL = ("ddl/box_player.sql", "ddl/pbp_actions.sql")
PARTITION_FIELD = "game_date"
CLUSTERING = ["game_id", "player_id"]


class SetupError(RuntimeError):
    """The table exists in a shape the pipeline cannot write (the message says what to do)."""


@dataclass(frozen=True)
class SetupResult:
    dataset_created: bool
    table_created: bool
    location: str | None
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        made = [what for what, done in (("dataset", self.dataset_created), ("table", self.table_created)) if done]
        head = f"{SUMMARY_TABLE}: " + (f"created {' and '.join(made)}" if made else "already in place")
        return "; ".join([head + (f" (location {self.location})" if self.location else ""), *self.notes])


def ensure_dataset(client: BigQueryClient, dataset: str, location: str | None = None) -> bool:
    """Create ``dataset`` when missing; True when it was created."""
    if client.dataset_location(dataset) is not None:
        return False
    return client.create_dataset(dataset, location)


def verify_summary_table(table: Table) -> tuple[str, ...]:
    """Refuse a table the MERGE cannot scope to one partition; return notes on lesser gaps."""
    if table.partition_field != PARTITION_FIELD or (table.partition_type or "DAY") != "DAY":
        partitioning = f"{table.partition_type} on {table.partition_field}" if table.partition_type else "none"
        raise SetupError(
            f"{SUMMARY_TABLE} exists but is not day-partitioned on {PARTITION_FIELD} "
            f"(partitioning: {partitioning}). Paceline writes one partition per run and will not "
            "write into it. Copy it aside, drop it, and run `python -m paceline nba setup` to "
            "create it as expected."
        )
    clustering = table.clustering_fields
    if clustering is None:
        # The emulator never reports clustering; on BigQuery it means an unclustered table.
        return (f"clustering not reported (expected {', '.join(CLUSTERING)}); "
                "on BigQuery: ALTER the table's clustering or recreate it",)
    if list(clustering) != CLUSTERING:
        return (f"clustered by {', '.join(clustering)}, expected {', '.join(CLUSTERING)}",)
    return ()


def ensure_summary_table(client: BigQueryClient, location: str | None = None) -> SetupResult:
    """Create the analytics dataset and the summary table when missing. Idempotent; never drops."""
    table = client.get_table(SUMMARY_TABLE)
    if table is not None:
        return SetupResult(False, False, None, verify_summary_table(table))
    # Same location as the raw data, or the MERGE that joins them cannot run.
    location = location or client.dataset_location(RAW_DATASET)
    dataset_created = ensure_dataset(client, ANALYTICS_DATASET, location)
    client.query(sql_text(SUMMARY_DDL))  # CREATE TABLE IF NOT EXISTS: a racing run is harmless
    table = client.get_table(SUMMARY_TABLE)
    if table is None:
        raise SetupError(f"{SUMMARY_TABLE} is still missing after its CREATE TABLE ran")
    result = SetupResult(dataset_created, True, location, verify_summary_table(table))
    log.info("%s", result.describe())
    return result


def ensure_raw_tables(client: BigQueryClient, location: str | None = None) -> None:
    """The raw tables, for the sandbox and tests (on BigQuery the loaders own them)."""
    ensure_dataset(client, RAW_DATASET, location)
    for name in RAW_DDL:
        client.query(sql_text(name))
