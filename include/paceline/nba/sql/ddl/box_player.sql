-- Raw box scores, one row per (game_id, person_id) as the provider sent it (docs/contract.md).
-- require_partition_filter: every reader must name its days, so a day's job cannot scan history
-- by accident (the BigQuery emulator accepts the option but does not enforce it).
CREATE TABLE IF NOT EXISTS nba_raw.box_player (
  game_date DATE,
  game_id STRING,
  team_id INT64,
  person_id INT64,
  first_name STRING,
  family_name STRING,
  position STRING,
  comment STRING,
  minutes STRING,
  fgm INT64,
  fga INT64,
  fg3m INT64,
  fg3a INT64,
  ftm INT64,
  fta INT64,
  oreb INT64,
  dreb INT64,
  reb INT64,
  ast INT64,
  stl INT64,
  blk INT64,
  tov INT64,
  pf INT64,
  pts INT64,
  plus_minus FLOAT64
)
PARTITION BY game_date
CLUSTER BY game_id, person_id
OPTIONS (require_partition_filter = TRUE)
