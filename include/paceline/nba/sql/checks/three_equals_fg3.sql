-- The three-point zone counts what the box score counts: three_fga = fg3a, three_fgm = fg3m.
SELECT
  game_date, game_id, player_id, three_fga, fg3a, three_fgm, fg3m,
  COUNT(*) OVER () AS offending_rows,
  (SELECT COUNT(*) FROM nba_analytics.player_game_summary
   WHERE game_date BETWEEN @start_date AND @end_date) AS checked_rows
FROM nba_analytics.player_game_summary
WHERE game_date BETWEEN @start_date AND @end_date
  AND (three_fga != fg3a OR three_fgm != fg3m)
ORDER BY game_date, game_id, player_id
LIMIT 10
