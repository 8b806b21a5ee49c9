-- Shot-zone coverage per day over the range given by the start_date and end_date parameters:
-- the box score's field-goal attempts that the play-by-play placed in a zone (paint, mid-range,
-- three), capped per player at the player's attempts, so extra play-by-play shots of one player
-- cannot make up for another's missing ones. Days without attempts are left out.
SELECT
  game_date,
  SUM(fga) AS fga,
  SUM(LEAST(paint_fga + midrange_fga + three_fga, fga)) AS zoned_fga
FROM nba_analytics.player_game_summary
WHERE game_date BETWEEN @start_date AND @end_date
GROUP BY game_date
HAVING SUM(fga) > 0
ORDER BY game_date
