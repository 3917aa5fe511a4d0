-- Sign in with Slack before Google's consent: each sign-in is an OAuth state of its own, in the same table as
-- Google's, told apart by provider, so the callback of one can never consume a state of the other. For a
-- 'slack' state, code_verifier holds the OpenID Connect nonce, and redirect_uri and scopes are Slack's.
ALTER TABLE oauth_states ADD COLUMN IF NOT EXISTS provider TEXT NOT NULL DEFAULT 'google';
ALTER TABLE oauth_states DROP CONSTRAINT IF EXISTS oauth_states_provider_check;
ALTER TABLE oauth_states ADD CONSTRAINT oauth_states_provider_check CHECK (provider IN ('google', 'slack'));
