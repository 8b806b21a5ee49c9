-- Every rule's figure over the range (start_date..end_date) in one job: a passing gate costs one query.
-- quality.py reads a rule's offending rows (its own file under checks/) only when its count here
-- is not zero, so each condition below must stay the one in that rule's file.
WITH summary_figures AS (
  SELECT
    COUNT(*) AS total_rows,
    -- null_minutes_by_day.sql, over the whole range
    COUNTIF(minutes_played IS NULL) AS null_rows,
    -- zone_coverage_by_day.sql, summed over the days
    COALESCE(SUM(fga), 0) AS fga,
    COALESCE(SUM(LEAST(paint_fga + midrange_fga + three_fga, fga)), 0) AS zoned_fga,
    -- zone_sum.sql
    COUNTIF(paint_fga + midrange_fga + three_fga != fga
            OR paint_fgm + midrange_fgm + three_fgm != fgm) AS zone_sum,
    -- three_equals_fg3.sql
    COUNTIF(three_fga != fg3a OR three_fgm != fg3m) AS three_equals_fg3,
    -- points_identity.sql
    COUNTIF(2 * (fgm - fg3m) + 3 * fg3m + ftm != points) AS points_identity,
    -- null_minutes_with_stats.sql
    COUNTIF(minutes_played IS NULL AND (points > 0 OR fga > 0 OR fta > 0)) AS null_minutes_with_stats
  FROM nba_analytics.player_game_summary
  WHERE game_date BETWEEN @start_date AND @end_date
),
raw_days AS (  -- completeness.sql
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
completeness_figure AS (
  SELECT COUNTIF(COALESCE(r.box_players, 0) != COALESCE(s.summary_rows, 0)) AS completeness
  FROM raw_days AS r
  FULL OUTER JOIN summary_days AS s ON r.game_date = s.game_date
)
SELECT f.*, c.completeness
FROM summary_figures AS f
CROSS JOIN completeness_figure AS c
