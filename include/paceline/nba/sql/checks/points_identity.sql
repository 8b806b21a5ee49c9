-- Points identity per player: 2 * (fgm - fg3m) + 3 * fg3m + ftm = points.
SELECT
  game_date, game_id, player_id, points, fgm, fg3m, ftm,
  2 * (fgm - fg3m) + 3 * fg3m + ftm AS expected_points,
  COUNT(*) OVER () AS offending_rows,
  (SELECT COUNT(*) FROM nba_analytics.player_game_summary
   WHERE game_date BETWEEN @start_date AND @end_date) AS checked_rows
FROM nba_analytics.player_game_summary
WHERE game_date BETWEEN @start_date AND @end_date
  AND 2 * (fgm - fg3m) + 3 * fg3m + ftm != points
ORDER BY game_date, game_id, player_id
LIMIT 10
