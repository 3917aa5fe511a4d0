-- Why a connection is in its status, as a stable code (storage/causes.py) beside the words of status_cause,
-- which stay as they are and are kept as the detail: surfaces translate the code into the reader's language.
-- No CHECK constraint: a code a newer version writes is read by an older one as its status's default.
ALTER TABLE gmail_tokens ADD COLUMN IF NOT EXISTS status_cause_code TEXT;

-- Existing rows get the code their status and words tell (the texts earlier versions wrote, Google's
-- invalid_grant text among them); what cannot be told gets its status's default code. Healthy rows have none,
-- and rows never checked are left alone (their code is `not_checked` when read): a legacy row, which only
-- other services have written so far, is not rewritten (its trigger would move updated_at).
UPDATE gmail_tokens
   SET status_cause_code = CASE
       WHEN status = 'missing' THEN
           CASE WHEN status_cause ILIKE '%no refresh token%' THEN 'refresh_token_missing'
                ELSE 'token_missing' END
       WHEN status IN ('expired', 'revoked') THEN
           CASE WHEN status_cause ILIKE '%security event%' OR status_cause ILIKE '%removed this app%'
                    THEN 'access_removed'
                WHEN status_cause ILIKE '%testing mode%' THEN 'testing_mode_expired'
                WHEN status_cause ILIKE '%invalid_rapt%' OR status_cause ILIKE '%rapt_required%'
                     OR status_cause ILIKE '%administrator requires%' THEN 'reauth_required'
                WHEN status_cause ILIKE '%invalid_client%' OR status_cause ILIKE '%unauthorized_client%'
                     OR status_cause ILIKE '%OAuth client%' THEN 'client_rejected'
                ELSE 'refresh_token_revoked' END
       WHEN status = 'insufficient_scope' THEN
           CASE WHEN status_cause ~* '(reading|readonly)' AND status_cause ~* '(sending|gmail\.send)'
                    THEN 'scope_missing_read_send'
                WHEN status_cause ~* '(sending|gmail\.send)' THEN 'scope_missing_send'
                ELSE 'scope_missing_read' END  -- Gmail refusing the briefing's read, among others
       WHEN status = 'disconnected' THEN
           CASE WHEN status_cause ILIKE 'Disconnected by slack:%' OR status_cause IS NULL
                    THEN 'disconnected_by_user'
                ELSE 'disconnected_by_admin' END
       WHEN status = 'unreadable' THEN 'tokens_unreadable'
       WHEN status = 'disabled' THEN 'account_disabled'
   END
 WHERE status_cause_code IS NULL AND status NOT IN ('healthy', 'unknown');

-- The admin summary counts each user's reconnections of the last days.
CREATE INDEX IF NOT EXISTS audit_log_action_idx ON audit_log (action, occurred_at DESC);
