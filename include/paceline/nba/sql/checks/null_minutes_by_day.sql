-- Per-day NULL minutes_played share over the range given by the start_date and end_date
-- parameters. Shown with a failing null_minutes_share rule, so that the operator sees which
-- days pull the figure out of its band.
SELECT
  game_date,
  COUNT(*) AS total_rows,
  COUNTIF(minutes_played IS NULL) AS null_rows,
  SAFE_DIVIDE(COUNTIF(minutes_played IS NULL), COUNT(*)) AS null_share
FROM nba_analytics.player_game_summary
WHERE game_date BETWEEN @start_date AND @end_date
GROUP BY game_date
