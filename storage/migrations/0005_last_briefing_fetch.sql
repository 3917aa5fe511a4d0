-- The result of each account's last briefing fetch, shown on the /gmail-status card: when, how it went
-- (ok, or why not), and how many unread messages it found. Columns are only added; no row is rewritten.
ALTER TABLE gmail_tokens
    ADD COLUMN IF NOT EXISTS last_fetch_at TIMESTAMPTZ,
    ADD COLUMN IF NOT EXISTS last_fetch_result TEXT,
    ADD COLUMN IF NOT EXISTS last_fetch_messages INTEGER;
