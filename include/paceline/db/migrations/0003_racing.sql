-- The Racing API (GB and IRE horse racing): the racing tables of the operator contract.
--
-- The API sends every scalar as a string ("8.0", "£3,140", "" for none). Typed columns hold
-- what parses; the payloads as received are kept in raw_racecard / raw_result, so a value that
-- did not parse is never lost. Master rows carry only attributes that do not change with the
-- race they were seen in (age, trainer, owner, weight... live on ra_runners).
CREATE SCHEMA IF NOT EXISTS racing;

CREATE TABLE IF NOT EXISTS racing.ra_mst_regions (
    region_code text PRIMARY KEY,          -- lowercase query code: gb, ire
    region text NOT NULL,                  -- "Great Britain"
    synced_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS racing.ra_mst_courses (
    course_id text PRIMARY KEY,            -- crs_...
    course text NOT NULL,
    region_code text,
    region text,
    synced_at timestamptz NOT NULL DEFAULT now()
);

-- No bookmakers endpoint exists: names come from racecard runners' odds[].bookmaker.
CREATE TABLE IF NOT EXISTS racing.ra_mst_bookmakers (
    bookmaker text PRIMARY KEY,
    synced_at timestamptz NOT NULL DEFAULT now()
);

-- Horses, sires and dams: results suffix the name with the country ("Raging Raj (IRE)"),
-- racecards give the bare name and a region field; both are stored as name + region.
CREATE TABLE IF NOT EXISTS racing.ra_mst_horses (
    horse_id text PRIMARY KEY,             -- hrs_...
    name text NOT NULL,
    region text,
    dob date,
    colour text,
    breeder text,
    synced_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS racing.ra_mst_jockeys (
    jockey_id text PRIMARY KEY,            -- jky_...
    name text NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS racing.ra_mst_trainers (
    trainer_id text PRIMARY KEY,           -- trn_...
    name text NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS racing.ra_mst_owners (
    owner_id text PRIMARY KEY,             -- own_...
    name text NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS racing.ra_mst_sires (
    sire_id text PRIMARY KEY,              -- sir_...
    name text NOT NULL,
    region text,
    synced_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS racing.ra_mst_dams (
    dam_id text PRIMARY KEY,               -- dam_...
    name text NOT NULL,
    region text,
    synced_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS racing.ra_mst_damsires (
    damsire_id text PRIMARY KEY,           -- dsi_...
    name text NOT NULL,
    region text,
    synced_at timestamptz NOT NULL DEFAULT now()
);

-- One row per race: the racecard's fields and, once run, the result's. Columns both give
-- (course, going, distance...) take the result's value when there is one.
CREATE TABLE IF NOT EXISTS racing.ra_races (
    race_id text PRIMARY KEY,              -- rac_...
    race_date date NOT NULL,
    course_id text,
    course text,
    region text,                           -- as in payloads: GB, IRE
    off_time text,                         -- 12-hour clock without am/pm, as sent
    off_dt timestamptz,
    race_name text,
    race_type text,                        -- Flat, Hurdle, Chase, NH Flat
    race_class text,
    pattern text,
    age_band text,
    rating_band text,
    sex_restriction text,
    distance text,                         -- "1m53y"
    distance_round text,                   -- racecard only: "1m"
    distance_f numeric,                    -- furlongs ("8.0" on racecards, "8f" on results)
    distance_y int,                        -- results only
    distance_m int,                        -- results only
    going text,
    going_detailed text,
    surface text,
    jumps text,
    prize text,                            -- racecard, as sent ("£3,140")
    prize_value numeric,                   -- parsed from prize, currency dropped
    field_size int,
    big_race boolean,
    is_abandoned boolean NOT NULL DEFAULT false,
    race_status text,
    has_racecard boolean NOT NULL DEFAULT false,
    has_result boolean NOT NULL DEFAULT false,
    winning_time_detail text,
    comments text,
    non_runners text,
    tote_win text,
    tote_pl text,
    tote_ex text,
    tote_csf text,
    tote_tricast text,
    tote_trifecta text,
    raw_racecard jsonb,                    -- the racecard without its runners (they are in ra_runners)
    raw_result jsonb,                      -- the result without its runners
    synced_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ra_races_date_idx ON racing.ra_races (race_date);
CREATE INDEX IF NOT EXISTS ra_races_course_idx ON racing.ra_races (course_id, race_date);

CREATE TABLE IF NOT EXISTS racing.ra_runners (
    race_id text NOT NULL,
    horse_id text NOT NULL,
    race_date date NOT NULL,
    horse text,
    number text,
    number_int int,
    draw text,
    draw_int int,
    age int,
    sex_code text,
    weight_lbs int,
    headgear text,
    jockey_id text,
    jockey text,
    jockey_claim_lbs int,
    trainer_id text,
    trainer text,
    owner_id text,
    owner text,
    official_rating int,                   -- racecard ofr / result or
    rpr int,
    topspeed int,                          -- racecard ts / result tsr
    form text,                             -- racecard
    last_run int,                          -- racecard: days since the last run
    odds jsonb,                            -- racecard odds[] (bookmaker, fractional, decimal ...)
    position text,                         -- result: "1", "2" ... or F, PU, UR ...; NULL for a non-runner
    finish_position int,                   -- position when numeric
    is_non_runner boolean,                 -- result: withdrawn (position null or empty)
    btn text,
    ovr_btn text,
    sp text,
    sp_dec numeric,
    bsp numeric,
    race_time text,
    prize text,
    comment text,
    has_racecard boolean NOT NULL DEFAULT false,
    has_result boolean NOT NULL DEFAULT false,
    raw_racecard jsonb,
    raw_result jsonb,
    synced_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (race_id, horse_id)
);
CREATE INDEX IF NOT EXISTS ra_runners_horse_idx ON racing.ra_runners (horse_id);
CREATE INDEX IF NOT EXISTS ra_runners_date_idx ON racing.ra_runners (race_date);

CREATE TABLE IF NOT EXISTS racing.ra_horse_pedigree (
    horse_id text PRIMARY KEY,
    sire_id text,
    dam_id text,
    damsire_id text,
    synced_at timestamptz NOT NULL DEFAULT now()
);
