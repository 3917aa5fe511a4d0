-- API keys get scopes: what each key may do (credentials: read access tokens; registry: list the accounts and
-- read one's status; report: say a token failed). Keys created before scopes existed keep all three, so that
-- no service loses access; every new key must name at least one.
ALTER TABLE api_keys
    ADD COLUMN IF NOT EXISTS scopes TEXT[] NOT NULL DEFAULT ARRAY['credentials', 'registry', 'report'];
ALTER TABLE api_keys ALTER COLUMN scopes DROP DEFAULT;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_scopes_known CHECK (
    cardinality(scopes) >= 1
    AND array_position(scopes, NULL) IS NULL
    AND scopes <@ ARRAY['credentials', 'registry', 'report']
);

-- When a token-failure report last made the bot check an account with Google. A report within a minute of
-- that check does not check again, in any replica: a service retrying in a loop costs Google one refresh a
-- minute, not one per report.
CREATE TABLE IF NOT EXISTS token_failure_checks (
    account_id INTEGER PRIMARY KEY REFERENCES gmail_tokens (id) ON DELETE CASCADE,
    checked_at TIMESTAMPTZ NOT NULL
);
