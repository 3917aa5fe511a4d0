-- The process that begins a run learns the users' languages from users.list while its workers run: the accounts
-- whose user's language is still to come are marked (language_pending) and claimed after the others, which go
-- to Slack at once. The claim index serves that order, so each claim still costs the same at the first account as
-- at the ten-thousandth; it takes the place of the one in account order alone.
ALTER TABLE briefing_run_items ADD COLUMN IF NOT EXISTS language_pending BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS briefing_run_items_claim_order_idx
    ON briefing_run_items (run_id, language_pending, account_id) WHERE state <> 'done';
DROP INDEX IF EXISTS briefing_run_items_claim_idx;
