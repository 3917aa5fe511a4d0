-- Adopt the gmail_tokens table in place (seed 000's schema), or create it when the database has none.
-- The runner applies this file in one transaction: if any statement fails, nothing changes.
-- Existing rows and values are never rewritten: columns are only added, and token_data only loses NOT NULL
-- (seed 001's deployments already hold rows whose token_data is NULL).

CREATE TABLE IF NOT EXISTS gmail_tokens (
    id SERIAL PRIMARY KEY,
    user_id VARCHAR(100) UNIQUE NOT NULL,
    robing_id VARCHAR(50),
    token_data JSONB,
    oauth_config JSONB,
    scopes JSONB,
    metadata JSONB,
    expiry TIMESTAMP,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

-- A table adopted from an older layout may lack some of seed 000's columns.
ALTER TABLE gmail_tokens
    ADD COLUMN IF NOT EXISTS robing_id VARCHAR(50),
    ADD COLUMN IF NOT EXISTS token_data JSONB,
    ADD COLUMN IF NOT EXISTS oauth_config JSONB,
    ADD COLUMN IF NOT EXISTS scopes JSONB,
    ADD COLUMN IF NOT EXISTS metadata JSONB,
    ADD COLUMN IF NOT EXISTS expiry TIMESTAMP,
    ADD COLUMN IF NOT EXISTS created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    ADD COLUMN IF NOT EXISTS updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP;

ALTER TABLE gmail_tokens ALTER COLUMN token_data DROP NOT NULL;

-- One Slack user, one row. Refuse (and roll everything back) when existing rows share a Slack ID,
-- listing them, so an admin can decide which row is right.
DO $$
DECLARE
    duplicates TEXT;
BEGIN
    SELECT string_agg(format('%s is on rows with user_id %s', slack_user_id, user_ids), '; '
                      ORDER BY slack_user_id)
      INTO duplicates
      FROM (SELECT metadata->>'slack_user_id' AS slack_user_id,
                   string_agg(quote_literal(user_id), ', ' ORDER BY user_id) AS user_ids
              FROM gmail_tokens
             WHERE (metadata->>'slack_user_id') <> ''
             GROUP BY 1
            HAVING count(*) > 1) AS shared;
    IF duplicates IS NOT NULL THEN
        RAISE EXCEPTION 'gmail_tokens has rows that share a Slack user ID: %', duplicates
            USING HINT = 'Keep metadata.slack_user_id on one row per Slack user (remove it from the others '
                         'with: UPDATE gmail_tokens SET metadata = metadata - ''slack_user_id'' WHERE user_id = ...), '
                         'then run the migration again.';
    END IF;
END
$$;

CREATE UNIQUE INDEX IF NOT EXISTS gmail_tokens_slack_user_id_key
    ON gmail_tokens ((metadata->>'slack_user_id'))
    WHERE (metadata->>'slack_user_id') <> '';

CREATE INDEX IF NOT EXISTS idx_gmail_tokens_user_id ON gmail_tokens (user_id);
CREATE INDEX IF NOT EXISTS idx_gmail_tokens_robing_id ON gmail_tokens (robing_id);

-- The connection's health. 'unknown' until the first check: adoption does not guess.
ALTER TABLE gmail_tokens
    ADD COLUMN IF NOT EXISTS status TEXT NOT NULL DEFAULT 'unknown',
    ADD COLUMN IF NOT EXISTS status_cause TEXT,
    ADD COLUMN IF NOT EXISTS status_changed_at TIMESTAMPTZ,
    ADD COLUMN IF NOT EXISTS last_refresh_at TIMESTAMPTZ,
    ADD COLUMN IF NOT EXISTS last_checked_at TIMESTAMPTZ,
    ADD COLUMN IF NOT EXISTS refresh_token_issued_at TIMESTAMPTZ;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                    WHERE conname = 'gmail_tokens_status_check' AND conrelid = 'gmail_tokens'::regclass) THEN
        ALTER TABLE gmail_tokens ADD CONSTRAINT gmail_tokens_status_check CHECK (status IN (
            'unknown', 'healthy', 'expired', 'revoked', 'missing', 'insufficient_scope', 'disconnected'));
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS gmail_tokens_status_idx ON gmail_tokens (status);

-- Seed 000's updated_at trigger, created only where the adopted table does not have it already.
DO $$
BEGIN
    IF to_regprocedure('update_updated_at_column()') IS NULL THEN
        CREATE FUNCTION update_updated_at_column() RETURNS TRIGGER AS $fn$
        BEGIN
            NEW.updated_at = CURRENT_TIMESTAMP;
            RETURN NEW;
        END;
        $fn$ LANGUAGE plpgsql;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                    WHERE tgname = 'update_gmail_tokens_updated_at' AND tgrelid = 'gmail_tokens'::regclass) THEN
        CREATE TRIGGER update_gmail_tokens_updated_at BEFORE UPDATE ON gmail_tokens
            FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
    END IF;
END
$$;
