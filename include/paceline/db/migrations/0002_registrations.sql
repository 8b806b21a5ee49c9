-- Race registrations (RunSignUp, Haku): the tables of the operator contract.
CREATE SCHEMA IF NOT EXISTS registrations;

CREATE TABLE IF NOT EXISTS registrations.timing_partners (
    timing_partner_id int PRIMARY KEY,
    name text NOT NULL
);

CREATE TABLE IF NOT EXISTS registrations.provider_integrations (
    integration_id text PRIMARY KEY,
    provider text NOT NULL CHECK (provider IN ('runsignup', 'haku')),
    timing_partner_id int NOT NULL REFERENCES registrations.timing_partners,
    organization text,
    conn_id text NOT NULL,
    enabled boolean NOT NULL DEFAULT true,
    calls_per_hour int,              -- quota override; NULL: the provider default
    calls_per_second double precision
);

CREATE TABLE IF NOT EXISTS registrations.runsignup_events (
    timing_partner_id int NOT NULL,
    race_id bigint NOT NULL,
    event_id bigint NOT NULL,
    integration_id text NOT NULL,
    race_name text,
    event_name text,
    start_time timestamp,            -- in the race's own timezone, as RunSignUp gives it
    race_timezone text,
    race_last_modified text,
    raw jsonb,
    synced_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (timing_partner_id, race_id, event_id)
);

CREATE TABLE IF NOT EXISTS registrations.runsignup_participants (
    timing_partner_id int NOT NULL,
    race_id bigint NOT NULL,
    event_id bigint NOT NULL,
    registration_id bigint NOT NULL,
    first_name text,
    last_name text,
    email text,
    dob date,
    gender text,
    bib_num text,
    registration_date timestamp,
    last_modified bigint,
    removed_reason text,
    raw jsonb,
    synced_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (timing_partner_id, race_id, event_id, registration_id)
);

CREATE TABLE IF NOT EXISTS registrations.haku_events (
    timing_partner_id int NOT NULL,
    event_id text NOT NULL,
    integration_id text NOT NULL,
    name text,
    event_date date,
    raw jsonb,
    synced_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (timing_partner_id, event_id)
);

CREATE TABLE IF NOT EXISTS registrations.haku_participants (
    event_id text NOT NULL,
    participant_id text NOT NULL,    -- Haku's registration_number
    timing_partner_id int NOT NULL,
    first_name text,
    last_name text,
    email text,
    is_cancelled boolean NOT NULL DEFAULT false,
    updated_at timestamptz,
    raw jsonb,
    synced_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, participant_id, timing_partner_id)
);
