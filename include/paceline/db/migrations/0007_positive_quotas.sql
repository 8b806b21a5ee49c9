-- A quota override of 0 or below is refused: a negative calls_per_hour made the limiter busy-loop,
-- and 0 would never admit a call. NULL keeps meaning "the provider's default".
--
-- Added NOT VALID, so that an existing bad row cannot fail the upgrade (and every DAG behind it):
-- new and updated rows are checked at once; the constraints are validated here when no row
-- breaks them, otherwise a WARNING names the integrations to fix (after which
-- ALTER TABLE registrations.provider_integrations VALIDATE CONSTRAINT <name> marks them valid).
-- Idempotent: each step checks pg_constraint first.
DO $$
DECLARE
    bad text;
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conrelid = 'registrations.provider_integrations'::regclass
          AND conname = 'provider_integrations_calls_per_hour_positive'
    ) THEN
        ALTER TABLE registrations.provider_integrations
            ADD CONSTRAINT provider_integrations_calls_per_hour_positive
            CHECK (calls_per_hour IS NULL OR calls_per_hour > 0) NOT VALID;
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conrelid = 'registrations.provider_integrations'::regclass
          AND conname = 'provider_integrations_calls_per_second_positive'
    ) THEN
        ALTER TABLE registrations.provider_integrations
            ADD CONSTRAINT provider_integrations_calls_per_second_positive
            CHECK (calls_per_second IS NULL OR calls_per_second > 0) NOT VALID;
    END IF;

    IF NOT EXISTS (SELECT 1 FROM registrations.provider_integrations WHERE calls_per_hour <= 0)
       AND EXISTS (
           SELECT 1 FROM pg_constraint
           WHERE conrelid = 'registrations.provider_integrations'::regclass
             AND conname = 'provider_integrations_calls_per_hour_positive' AND NOT convalidated
       ) THEN
        ALTER TABLE registrations.provider_integrations
            VALIDATE CONSTRAINT provider_integrations_calls_per_hour_positive;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM registrations.provider_integrations WHERE calls_per_second <= 0)
       AND EXISTS (
           SELECT 1 FROM pg_constraint
           WHERE conrelid = 'registrations.provider_integrations'::regclass
             AND conname = 'provider_integrations_calls_per_second_positive' AND NOT convalidated
       ) THEN
        ALTER TABLE registrations.provider_integrations
            VALIDATE CONSTRAINT provider_integrations_calls_per_second_positive;
    END IF;

    SELECT string_agg(integration_id, ', ' ORDER BY integration_id) INTO bad
    FROM registrations.provider_integrations
    WHERE calls_per_hour <= 0 OR calls_per_second <= 0;
    IF bad IS NOT NULL THEN
        RAISE WARNING 'registrations.provider_integrations: calls_per_hour or calls_per_second is 0 or below for %; '
                      'set it to a positive number or NULL (the provider default)', bad;
    END IF;
END
$$;
