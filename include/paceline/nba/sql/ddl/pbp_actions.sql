-- Raw play-by-play actions (docs/contract.md). See box_player.sql for require_partition_filter.
CREATE TABLE IF NOT EXISTS nba_raw.pbp_actions (
  game_date DATE,
  game_id STRING,
  action_number INT64,
  period INT64,
  clock STRING,
  team_id INT64,
  person_id INT64,
  action_type STRING,
  sub_type STRING,
  shot_result STRING,
  is_field_goal INT64,
  shot_value INT64,
  shot_distance FLOAT64,
  x_legacy INT64,
  y_legacy INT64,
  shot_zone_basic STRING
)
PARTITION BY game_date
CLUSTER BY game_id, person_id
OPTIONS (require_partition_filter = TRUE)
