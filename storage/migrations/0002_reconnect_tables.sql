-- Tables of the reconnection flow: OAuth states, reconnect prompts, the audit log and API keys.

-- One row per visit to the consent link. Only a hash of the state is stored; the PKCE code verifier is
-- encrypted when TOKEN_ENCRYPTION_KEYS is set. A state is consumed once (consumed_at), within its expiry.
CREATE TABLE IF NOT EXISTS oauth_states (
    id BIGSERIAL PRIMARY KEY,
    state_hash BYTEA NOT NULL UNIQUE,
    browser_binding_hash BYTEA NOT NULL,
    slack_user_id TEXT NOT NULL,
    slack_team_id TEXT,
    purpose TEXT NOT NULL CHECK (purpose IN ('reconnect', 'switch')),
    link_id TEXT,
    code_verifier TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    consumed_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS oauth_states_expires_at_idx ON oauth_states (expires_at);

-- A Reconnect Gmail DM. At most one open prompt per Slack user and incident; its channel and ts let a
-- later reminder or a successful reconnection update the same message in place.
CREATE TABLE IF NOT EXISTS reconnect_prompts (
    id BIGSERIAL PRIMARY KEY,
    slack_user_id TEXT NOT NULL,
    account_id INTEGER REFERENCES gmail_tokens (id) ON DELETE SET NULL,
    incident TEXT NOT NULL,
    cause TEXT,
    state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'resolved', 'dismissed')),
    channel_id TEXT,
    message_ts TEXT,
    snoozed_until TIMESTAMPTZ,
    sent_count INTEGER NOT NULL DEFAULT 0,
    last_sent_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    resolved_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX IF NOT EXISTS reconnect_prompts_one_open_idx
    ON reconnect_prompts (slack_user_id, incident) WHERE state = 'open';

-- Append-only record of every token event (seed 003): who, what, when, and details without secrets.
CREATE TABLE IF NOT EXISTS audit_log (
    id BIGSERIAL PRIMARY KEY,
    occurred_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    account_id INTEGER,
    user_id TEXT,
    slack_user_id TEXT,
    details JSONB NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS audit_log_account_idx ON audit_log (account_id, occurred_at DESC);
CREATE INDEX IF NOT EXISTS audit_log_slack_user_idx ON audit_log (slack_user_id, occurred_at DESC);

CREATE OR REPLACE FUNCTION audit_log_is_append_only() RETURNS TRIGGER AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS audit_log_no_update ON audit_log;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log;
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();

-- Keys for service-to-service calls; only a SHA-256 hash of each key is kept (keys are long and random).
CREATE TABLE IF NOT EXISTS api_keys (
    id SERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    key_prefix TEXT NOT NULL,
    key_hash BYTEA NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name_idx ON api_keys (name) WHERE revoked_at IS NULL;
