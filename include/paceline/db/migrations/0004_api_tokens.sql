-- OAuth access tokens shared by every worker process, one per credential (Haku's Cognito
-- client-credentials tokens). Keyed by a hash of (token URL, client id, client secret) so that
-- the credential itself never lands in the warehouse; the token is stored encrypted with a key
-- derived from the client secret, so a reader of this table alone cannot call the API.
CREATE TABLE IF NOT EXISTS paceline.api_tokens (
    credential_hash text PRIMARY KEY,
    provider text NOT NULL,
    token_encrypted text NOT NULL,
    expires_at timestamptz NOT NULL,
    refresh_after timestamptz NOT NULL,   -- shortly before expires_at: reuse until then
    fetched_at timestamptz NOT NULL DEFAULT now()
);
