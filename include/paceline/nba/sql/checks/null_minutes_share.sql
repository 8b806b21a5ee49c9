-- Share of NULL minutes_played (players who did not play) over the range given by the
-- start_date and end_date parameters.
-- The old system's parser bug left 99.5% NULL; a healthy season sits at about 35-45%.
-- One row: the figure, judged in quality.py (band over a range, ceiling for a single day).
SELECT
  COUNT(*) AS total_rows,
  COUNTIF(minutes_played IS NULL) AS null_rows,
  SAFE_DIVIDE(COUNTIF(minutes_played IS NULL), COUNT(*)) AS null_share
FROM nba_analytics.player_game_summary
WHERE game_date BETWEEN @start_date AND @end_date
