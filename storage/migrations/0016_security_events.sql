-- Google's security events (Cross-Account Protection, RISC): which Google account a row belongs to, a status
-- of its own for an account Google disabled, and the events already received.

-- Events name the Google account by its `sub`, stored in metadata beside the email at consent (and filled in at
-- a later refresh for rows connected before): looked up by this index.
CREATE INDEX IF NOT EXISTS gmail_tokens_google_sub_idx
    ON gmail_tokens ((metadata->>'google_sub'))
    WHERE (metadata->>'google_sub') <> '';

-- 'disabled': Google disabled the account; the bot stops using it until Google enables it again. The check
-- keeps every value the current one allows (other migrations may have added theirs) and adds this one.
DO $$
DECLARE
    allowed TEXT[];
BEGIN
    SELECT array_agg(DISTINCT value ORDER BY value)
      INTO allowed
      FROM pg_constraint AS c,
           LATERAL regexp_matches(pg_get_constraintdef(c.oid), '''([a-z_]+)''', 'g') AS found(m),
           LATERAL (SELECT found.m[1] AS value) AS v
     WHERE c.conname = 'gmail_tokens_status_check' AND c.conrelid = 'gmail_tokens'::regclass;
    allowed := coalesce(allowed, ARRAY['unknown', 'healthy', 'expired', 'revoked', 'missing',
                                       'insufficient_scope', 'disconnected']);
    IF NOT 'disabled' = ANY (allowed) THEN
        allowed := array_append(allowed, 'disabled');
    END IF;
    ALTER TABLE gmail_tokens DROP CONSTRAINT IF EXISTS gmail_tokens_status_check;
    EXECUTE format('ALTER TABLE gmail_tokens ADD CONSTRAINT gmail_tokens_status_check CHECK (status IN (%s))',
                   (SELECT string_agg(quote_literal(value), ', ') FROM unnest(allowed) AS value));
END
$$;

-- Each security event token (its jti) that was acted on, whichever replica received it: Google delivers an
-- event again when it believes the first delivery failed. Kept past the age at which a token is refused anyway.
CREATE TABLE IF NOT EXISTS risc_events_received (
    jti TEXT PRIMARY KEY,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS risc_events_received_expires_at_idx ON risc_events_received (expires_at);
