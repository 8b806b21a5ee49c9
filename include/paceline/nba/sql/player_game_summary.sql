-- nba_analytics.player_game_summary for ONE game day, rebuilt from that day's raw partitions.
-- (No at-sign in comments: the BigQuery emulator binds parameters by regex, comments included.)
--
-- Query parameter game_date (DATE): the run's data interval start. The day is never formatted into
-- this text. One MERGE statement, so it is atomic and idempotent: rows of the day are updated,
-- inserted, or deleted when they left the box score; other days are untouched. Re-running a day
-- leaves identical rows; a day without games writes nothing.
--
-- Minutes rule (docs/providers.md, NBA data), after trimming blanks:
--   'MM:SS' or 'M:SS' (seconds 00-59)          -> MM + SS/60
--   'PT<m>M<s>S' with optional fraction/seconds -> m + s/60 ('PT25M01.00S' -> 25.0167)
--   '' or NULL                                  -> NULL (did not play)
--   anything else                               -> data error: the statement fails with ERROR(),
--     naming the day, the count and up to 10 offending rows. Never a silent NULL.
-- Duplicate box-score keys of the day are a data error too (they would double a player).
--
-- Shot zone per field-goal attempt (is_field_goal = 1), docs/providers.md, NBA data:
--   shot_zone_basic when usable: Restricted Area / In The Paint (Non-RA) -> paint,
--   Mid-Range -> midrange, Left Corner 3 / Right Corner 3 / Above the Break 3 -> three,
--   Backcourt -> three when shot_value = 3.
--   Otherwise (NULL, '', unknown, or a Backcourt shot without shot_value 3):
--   shot_value = 3 -> three. When shot_value is NULL the coordinates stand in for it
--   (0.1 ft, hoop at 0,0): x^2 + y^2 >= 237.5^2, or |x| >= 220 AND y <= 92.5 -> three.
--   Then |x| <= 80 AND y <= 142.5 -> paint; any other known point -> midrange.
--   An explicit shot_value = 2 is never turned into a three by the coordinates: the shot value
--   is what the box score's fg3a counts. An attempt with no zone, no shot value 3 and no
--   coordinates stays unclassified, and the zone-sum quality check reports it.
MERGE nba_analytics.player_game_summary AS t
USING (
  WITH
  box AS (
    SELECT
      game_date, game_id, team_id, person_id,
      NULLIF(TRIM(minutes), '') AS minutes_raw,
      fgm, fga, fg3m, fg3a, ftm, fta, pts
    FROM nba_raw.box_player
    WHERE game_date = @game_date
  ),
  box_parsed AS (
    SELECT
      box.*,
      CASE
        WHEN minutes_raw IS NULL THEN NULL
        WHEN REGEXP_CONTAINS(minutes_raw, r'^[0-9]{1,2}:[0-5][0-9]$') THEN
          CAST(REGEXP_EXTRACT(minutes_raw, r'^([0-9]+):') AS INT64)
          + CAST(REGEXP_EXTRACT(minutes_raw, r':([0-9]+)$') AS INT64) / 60
        WHEN REGEXP_CONTAINS(minutes_raw, r'^PT[0-9]{1,2}M([0-5]?[0-9](\.[0-9]+)?S)?$') THEN
          CAST(REGEXP_EXTRACT(minutes_raw, r'^PT([0-9]+)M') AS INT64)
          + COALESCE(CAST(REGEXP_EXTRACT(minutes_raw, r'M([0-9]+(?:\.[0-9]+)?)S$') AS FLOAT64), 0) / 60
      END AS parsed_minutes,
      minutes_raw IS NOT NULL
        AND NOT REGEXP_CONTAINS(minutes_raw, r'^[0-9]{1,2}:[0-5][0-9]$')
        AND NOT REGEXP_CONTAINS(minutes_raw, r'^PT[0-9]{1,2}M([0-5]?[0-9](\.[0-9]+)?S)?$')
        AS minutes_malformed,
      COUNT(*) OVER (PARTITION BY game_id, person_id) > 1 AS duplicate_key
    FROM box
  ),
  malformed AS (
    SELECT game_id, person_id, minutes_raw FROM box_parsed WHERE minutes_malformed
  ),
  duplicates AS (
    SELECT DISTINCT game_id, person_id FROM box_parsed WHERE duplicate_key
  ),
  data_errors AS (
    -- One row whatever the day holds; the samples aggregate only the offending rows.
    SELECT
      (SELECT COUNT(*) FROM malformed) AS malformed_minutes,
      (SELECT STRING_AGG(
          CONCAT('game_id=', game_id, ' person_id=', CAST(person_id AS STRING),
                 ' minutes=\'', minutes_raw, '\''),
          '; ' ORDER BY game_id, person_id LIMIT 10)
       FROM malformed) AS malformed_sample,
      (SELECT COUNT(*) FROM duplicates) AS duplicate_keys,
      (SELECT STRING_AGG(CONCAT('game_id=', game_id, ' person_id=', CAST(person_id AS STRING)),
                         '; ' ORDER BY game_id, person_id LIMIT 10)
       FROM duplicates) AS duplicate_sample
  ),
  shots AS (
    -- DISTINCT: an action delivered twice must not count twice.
    SELECT DISTINCT
      game_id, action_number, person_id, shot_result, shot_value, x_legacy AS x, y_legacy AS y,
      NULLIF(TRIM(shot_zone_basic), '') AS zone_basic
    FROM nba_raw.pbp_actions
    WHERE game_date = @game_date AND is_field_goal = 1
  ),
  zoned AS (
    SELECT
      game_id, person_id,
      shot_result = 'Made' AS made,
      CASE
        WHEN zone_basic IN ('Restricted Area', 'In The Paint (Non-RA)') THEN 'paint'
        WHEN zone_basic = 'Mid-Range' THEN 'midrange'
        WHEN zone_basic IN ('Left Corner 3', 'Right Corner 3', 'Above the Break 3') THEN 'three'
        WHEN zone_basic = 'Backcourt' AND shot_value = 3 THEN 'three'
        WHEN shot_value = 3 THEN 'three'
        WHEN shot_value IS NULL
          AND (x * x + y * y >= 237.5 * 237.5 OR (ABS(x) >= 220 AND y <= 92.5)) THEN 'three'
        WHEN ABS(x) <= 80 AND y <= 142.5 THEN 'paint'
        WHEN x IS NOT NULL AND y IS NOT NULL THEN 'midrange'
      END AS zone
    FROM shots
  ),
  zones AS (
    SELECT
      game_id, person_id,
      COUNTIF(zone = 'paint') AS paint_fga,
      COUNTIF(zone = 'paint' AND made) AS paint_fgm,
      COUNTIF(zone = 'midrange') AS midrange_fga,
      COUNTIF(zone = 'midrange' AND made) AS midrange_fgm,
      COUNTIF(zone = 'three') AS three_fga,
      COUNTIF(zone = 'three' AND made) AS three_fgm
    FROM zoned
    GROUP BY game_id, person_id
  )
  SELECT
    b.game_date,
    b.game_id,
    b.person_id AS player_id,
    b.team_id,
    -- ERROR() fails the whole statement, so a day with a data error writes nothing.
    CASE
      WHEN e.malformed_minutes > 0 THEN ERROR(CONCAT(
        'minutes_format: ', CAST(e.malformed_minutes AS STRING),
        ' box_player row(s) of ', CAST(@game_date AS STRING),
        ' have malformed minutes (accepted: MM:SS, M:SS, PTmmMss.ssS, empty, NULL); first 10: ',
        e.malformed_sample))
      WHEN e.duplicate_keys > 0 THEN ERROR(CONCAT(
        'box_player_duplicates: ', CAST(e.duplicate_keys AS STRING),
        ' (game_id, person_id) key(s) of ', CAST(@game_date AS STRING),
        ' appear more than once in box_player; first 10: ', e.duplicate_sample))
      ELSE b.parsed_minutes
    END AS minutes_played,
    COALESCE(b.pts, 0) AS points,
    COALESCE(b.fgm, 0) AS fgm,
    COALESCE(b.fga, 0) AS fga,
    COALESCE(b.fg3m, 0) AS fg3m,
    COALESCE(b.fg3a, 0) AS fg3a,
    COALESCE(b.ftm, 0) AS ftm,
    COALESCE(b.fta, 0) AS fta,
    COALESCE(z.paint_fga, 0) AS paint_fga,
    COALESCE(z.paint_fgm, 0) AS paint_fgm,
    COALESCE(z.midrange_fga, 0) AS midrange_fga,
    COALESCE(z.midrange_fgm, 0) AS midrange_fgm,
    COALESCE(z.three_fga, 0) AS three_fga,
    COALESCE(z.three_fgm, 0) AS three_fgm
  FROM box_parsed AS b
  CROSS JOIN data_errors AS e
  LEFT JOIN zones AS z
    ON z.game_id = b.game_id AND z.person_id = b.person_id
) AS s
ON t.game_date = @game_date
  AND t.game_date = s.game_date
  AND t.game_id = s.game_id
  AND t.player_id = s.player_id
WHEN MATCHED THEN UPDATE SET
  team_id = s.team_id,
  minutes_played = s.minutes_played,
  points = s.points,
  fgm = s.fgm,
  fga = s.fga,
  fg3m = s.fg3m,
  fg3a = s.fg3a,
  ftm = s.ftm,
  fta = s.fta,
  paint_fga = s.paint_fga,
  paint_fgm = s.paint_fgm,
  midrange_fga = s.midrange_fga,
  midrange_fgm = s.midrange_fgm,
  three_fga = s.three_fga,
  three_fgm = s.three_fgm
WHEN NOT MATCHED BY TARGET THEN INSERT (
  game_date, game_id, player_id, team_id, minutes_played, points, fgm, fga, fg3m, fg3a, ftm, fta,
  paint_fga, paint_fgm, midrange_fga, midrange_fgm, three_fga, three_fgm
) VALUES (
  s.game_date, s.game_id, s.player_id, s.team_id, s.minutes_played, s.points, s.fgm, s.fga, s.fg3m,
  s.fg3a, s.ftm, s.fta, s.paint_fga, s.paint_fgm, s.midrange_fga, s.midrange_fgm, s.three_fga,
  s.three_fgm
)
WHEN NOT MATCHED BY SOURCE AND t.game_date = @game_date THEN DELETE
