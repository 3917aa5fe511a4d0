-- The admin summary of a run: where its Slack message is, so that it can be edited as users reconnect, and
-- which accounts needed their user when the run handled them (kept even after a reconnection makes up for it).
ALTER TABLE briefing_runs ADD COLUMN IF NOT EXISTS summary_channel TEXT;
ALTER TABLE briefing_runs ADD COLUMN IF NOT EXISTS summary_ts TEXT;
ALTER TABLE briefing_run_items ADD COLUMN IF NOT EXISTS needed_user BOOLEAN NOT NULL DEFAULT false;
