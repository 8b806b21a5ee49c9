-- Every box-score player of every day in range has exactly one summary row, and no summary row
-- lacks a box-score player: days whose counts differ (a day not yet built, or built from
-- other raw data) are reported. Reads raw only for the checked days.
WITH raw_days AS (
  SELECT game_date, COUNT(DISTINCT CONCAT(game_id, '/', CAST(person_id AS STRING))) AS box_players
  FROM nba_raw.box_player
  WHERE game_date BETWEEN @start_date AND @end_date
  GROUP BY game_date
),
summary_days AS (
  SELECT game_date, COUNT(*) AS summary_rows
  FROM nba_analytics.player_game_summary
  WHERE game_date BETWEEN @start_date AND @end_date
  GROUP BY game_date
),
days AS (
  SELECT
    COALESCE(r.game_date, s.game_date) AS game_date,
    COALESCE(r.box_players, 0) AS box_players,
    COALESCE(s.summary_rows, 0) AS summary_rows
  FROM raw_days AS r
  FULL OUTER JOIN summary_days AS s ON r.game_date = s.game_date
)
SELECT
  game_date, box_players, summary_rows,
  COUNT(*) OVER () AS offending_rows,
  (SELECT COUNT(*) FROM raw_days) AS checked_rows
FROM days
WHERE box_players != summary_rows
ORDER BY game_date
LIMIT 10
