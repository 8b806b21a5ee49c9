-- The parser's other failure mode: a player with shots, free throws or points but no minutes.
-- Offending rows first; every row carries the offender count and the rows checked.
SELECT
  game_date, game_id, player_id, minutes_played, points, fga, fta,
  COUNT(*) OVER () AS offending_rows,
  (SELECT COUNT(*) FROM nba_analytics.player_game_summary
   WHERE game_date BETWEEN @start_date AND @end_date) AS checked_rows
FROM nba_analytics.player_game_summary
WHERE game_date BETWEEN @start_date AND @end_date
  AND minutes_played IS NULL
  AND (points > 0 OR fga > 0 OR fta > 0)
ORDER BY game_date, game_id, player_id
LIMIT 10
