-- Every field-goal attempt lands in exactly one zone: paint + midrange + three = fga (and fgm).
SELECT
  game_date, game_id, player_id, fga, paint_fga, midrange_fga, three_fga,
  fgm, paint_fgm, midrange_fgm, three_fgm,
  COUNT(*) OVER () AS offending_rows,
  (SELECT COUNT(*) FROM nba_analytics.player_game_summary
   WHERE game_date BETWEEN @start_date AND @end_date) AS checked_rows
FROM nba_analytics.player_game_summary
WHERE game_date BETWEEN @start_date AND @end_date
  AND (paint_fga + midrange_fga + three_fga != fga
       OR paint_fgm + midrange_fgm + three_fgm != fgm)
ORDER BY game_date, game_id, player_id
LIMIT 10
