-- The admin summary of a run goes through the delivery queue too, queued in the transaction that takes it: a
-- process that stops after taking it no longer leaves it unposted, and Slack failing for a moment is waited out
-- as it is for the digests. The drainer records where it was posted (briefing_runs.summary_channel, _ts).
ALTER TABLE slack_outbox DROP CONSTRAINT IF EXISTS slack_outbox_kind_check;
ALTER TABLE slack_outbox ADD CONSTRAINT slack_outbox_kind_check CHECK (kind IN ('digest', 'prompt', 'summary'));

-- One summary per run, whoever queues it.
CREATE UNIQUE INDEX IF NOT EXISTS slack_outbox_one_summary ON slack_outbox (run_id) WHERE kind = 'summary';
