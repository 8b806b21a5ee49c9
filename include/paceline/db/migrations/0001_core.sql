-- Paceline's own bookkeeping: cursors, audit of every unit of work, rejected records.
CREATE SCHEMA IF NOT EXISTS paceline;

-- Per-(integration, scope) cursors. A cursor row is written in the same transaction as the
-- data it covers, so it can never run ahead of what is committed.
CREATE TABLE IF NOT EXISTS paceline.watermarks (
    integration_id text NOT NULL,
    scope text NOT NULL,              -- e.g. 'event:12345' or 'participants:12345'
    cursor_value text NOT NULL,
    last_full_sync_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (integration_id, scope)
);

-- One row per unit of work per attempt: what was synced, how, and what it cost.
CREATE TABLE IF NOT EXISTS paceline.sync_audit (
    audit_id bigserial PRIMARY KEY,
    provider text NOT NULL,
    integration_id text,
    timing_partner_id int,
    unit text NOT NULL,               -- event id, day, month...
    sync_type text NOT NULL,          -- full | incremental | backfill | day
    status text NOT NULL,             -- success | failed
    rows_inserted int NOT NULL DEFAULT 0,
    rows_updated int NOT NULL DEFAULT 0,
    rows_removed int NOT NULL DEFAULT 0,
    rows_rejected int NOT NULL DEFAULT 0,
    calls int NOT NULL DEFAULT 0,
    estimated_size int,
    actual_size int,
    error text,
    dag_id text,
    run_id text,
    task_id text,
    map_index int,
    try_number int,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    duration_s double precision GENERATED ALWAYS AS (extract(epoch FROM finished_at - started_at)) STORED
);
CREATE INDEX IF NOT EXISTS sync_audit_unit_idx ON paceline.sync_audit (provider, integration_id, unit, finished_at DESC);

-- Records that could not be parsed: kept with the reason and the body as received.
CREATE TABLE IF NOT EXISTS paceline.rejected_records (
    rejected_id bigserial PRIMARY KEY,
    provider text NOT NULL,
    integration_id text,
    unit text,
    record_key text,
    reason text NOT NULL,
    raw text NOT NULL,
    dag_id text,
    run_id text,
    rejected_at timestamptz NOT NULL DEFAULT now()
);
