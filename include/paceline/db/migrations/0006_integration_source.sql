-- Where an integration came from: 'sandbox' (registered by `paceline sandbox up`), 'config'
-- (config/integrations.json or `paceline integrations add`). PACELINE_SANDBOX=off disables the
-- sandbox's ones without touching the others.
ALTER TABLE registrations.provider_integrations ADD COLUMN IF NOT EXISTS source text NOT NULL DEFAULT 'config';
