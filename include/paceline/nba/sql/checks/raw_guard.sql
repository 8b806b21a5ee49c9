-- Why the day given by the game_date parameter must not be rebuilt from raw now. One row per
-- problem game (no rows: safe to rebuild):
--   missing_from_box_player: the summary holds the game but the raw box score of the day does
--     not (an empty or half-reloaded partition); the MERGE would delete the game's rows.
--   no_pbp_shots: the box score has field-goal attempts for the game but the play-by-play has
--     no field goal of it; the MERGE would zero the game's shot zones.
-- n: the game's summary rows, or its box-score field-goal attempts.
WITH raw_box AS (
  SELECT game_id, SUM(COALESCE(fga, 0)) AS fga
  FROM nba_raw.box_player
  WHERE game_date = @game_date
  GROUP BY game_id
),
raw_shots AS (
  SELECT DISTINCT game_id
  FROM nba_raw.pbp_actions
  WHERE game_date = @game_date AND is_field_goal = 1
),
summary_games AS (
  SELECT game_id, COUNT(*) AS n
  FROM nba_analytics.player_game_summary
  WHERE game_date = @game_date
  GROUP BY game_id
)
SELECT 'missing_from_box_player' AS problem, s.game_id, s.n
FROM summary_games AS s
LEFT JOIN raw_box AS b ON b.game_id = s.game_id
WHERE b.game_id IS NULL
UNION ALL
SELECT 'no_pbp_shots' AS problem, b.game_id, b.fga AS n
FROM raw_box AS b
LEFT JOIN raw_shots AS p ON p.game_id = b.game_id
WHERE b.fga > 0 AND p.game_id IS NULL
ORDER BY problem, game_id
