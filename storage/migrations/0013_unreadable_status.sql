-- A row whose tokens cannot be decrypted (a key missing from TOKEN_ENCRYPTION_KEYS, a ciphertext copied from
-- another row or field) gets a status of its own, so that its user is asked to reconnect instead of losing
-- the briefing silently.
ALTER TABLE gmail_tokens DROP CONSTRAINT IF EXISTS gmail_tokens_status_check;
ALTER TABLE gmail_tokens ADD CONSTRAINT gmail_tokens_status_check CHECK (status IN (
    'unknown', 'healthy', 'expired', 'revoked', 'missing', 'insufficient_scope', 'disconnected', 'unreadable'));
