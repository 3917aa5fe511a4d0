-- A claim is a lease that its process renews while it lives: one that lapsed (lease_until passed) belongs to
-- a process that died or lost the database, and any replica takes it over, within a lease instead of the
-- ten minutes a claim used to wait. The digest of an item is marked before it goes to Slack (post_started_at)
-- and recorded when Slack accepts it (posted_at, posted_ts): a takeover never posts a recorded digest again,
-- and knows that one marked and not recorded may have reached the user.
ALTER TABLE briefing_run_items ADD COLUMN IF NOT EXISTS lease_until TIMESTAMPTZ;
ALTER TABLE briefing_run_items ADD COLUMN IF NOT EXISTS post_started_at TIMESTAMPTZ;
ALTER TABLE briefing_run_items ADD COLUMN IF NOT EXISTS posted_at TIMESTAMPTZ;
ALTER TABLE briefing_run_items ADD COLUMN IF NOT EXISTS posted_ts TEXT;
-- Claims taken before this migration had no lease: they lapse as they would have under the old rule.
UPDATE briefing_run_items SET lease_until = claimed_at + interval '10 minutes'
 WHERE state = 'claimed' AND lease_until IS NULL;
