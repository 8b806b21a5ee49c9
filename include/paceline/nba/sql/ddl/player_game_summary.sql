-- One row per (game_date, game_id, player_id) present in the box score (docs/contract.md).
-- Written one day (= one partition) at a time by the statement in ../player_game_summary.sql.
CREATE TABLE IF NOT EXISTS nba_analytics.player_game_summary (
  game_date DATE NOT NULL,
  game_id STRING NOT NULL,
  player_id INT64 NOT NULL,
  team_id INT64,
  minutes_played FLOAT64,
  points INT64,
  fgm INT64,
  fga INT64,
  fg3m INT64,
  fg3a INT64,
  ftm INT64,
  fta INT64,
  paint_fga INT64,
  paint_fgm INT64,
  midrange_fga INT64,
  midrange_fgm INT64,
  three_fga INT64,
  three_fgm INT64
)
PARTITION BY game_date
CLUSTER BY game_id, player_id
