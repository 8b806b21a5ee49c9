-- A rejected record is kept once, not once per run: the same body rejected for the same reason
-- again only bumps times_seen and last_seen_at. A changed body is a new row.
ALTER TABLE paceline.rejected_records ADD COLUMN IF NOT EXISTS times_seen int NOT NULL DEFAULT 1;
ALTER TABLE paceline.rejected_records ADD COLUMN IF NOT EXISTS last_seen_at timestamptz NOT NULL DEFAULT now();

-- Rows stored once per run before this migration: keep the first of each, counted.
WITH grouped AS (
    SELECT rejected_id,
           first_value(rejected_id) OVER w AS keep_id,
           count(*) OVER w AS copies,
           max(rejected_at) OVER w AS last_at
    FROM paceline.rejected_records
    WINDOW w AS (PARTITION BY provider, coalesce(integration_id, ''), coalesce(unit, ''), coalesce(record_key, ''),
                 reason, md5(raw) ORDER BY rejected_id
                 ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
)
UPDATE paceline.rejected_records r SET times_seen = g.copies, last_seen_at = g.last_at
FROM grouped g WHERE r.rejected_id = g.rejected_id AND g.rejected_id = g.keep_id AND g.copies > 1;

DELETE FROM paceline.rejected_records r
USING paceline.rejected_records earlier
WHERE earlier.rejected_id < r.rejected_id
  AND earlier.provider = r.provider
  AND coalesce(earlier.integration_id, '') = coalesce(r.integration_id, '')
  AND coalesce(earlier.unit, '') = coalesce(r.unit, '')
  AND coalesce(earlier.record_key, '') = coalesce(r.record_key, '')
  AND earlier.reason = r.reason
  AND md5(earlier.raw) = md5(r.raw);

CREATE UNIQUE INDEX IF NOT EXISTS rejected_records_once ON paceline.rejected_records
    (provider, coalesce(integration_id, ''), coalesce(unit, ''), coalesce(record_key, ''), reason, md5(raw));
