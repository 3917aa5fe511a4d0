-- The delivery queue of the runs' Slack messages. A run writes each digest and Reconnect Gmail DM here, fenced
-- by its claim on the account, instead of posting it; one drainer at a time (the holder of a session advisory lock, so a drainer
-- that dies hands over at once) sends the queue at the workspace's pace. A message is marked `sending` before
-- it goes to Slack and `sent` when Slack accepts it: after a crash only those still `sending` may be doubled.
CREATE TABLE IF NOT EXISTS slack_outbox (
    id BIGSERIAL PRIMARY KEY,
    run_id BIGINT REFERENCES briefing_runs (id) ON DELETE CASCADE,
    account_id INTEGER,
    kind TEXT NOT NULL CHECK (kind IN ('digest', 'prompt')),
    -- A Reconnect Gmail DM: its prompt, which says at send time whether to post it, edit the DM already sent,
    -- or drop it (the user reconnected meanwhile).
    prompt_id BIGINT REFERENCES reconnect_prompts (id) ON DELETE CASCADE,
    channel TEXT NOT NULL,
    -- {"text": ..., "blocks": [...]} as JSON: encrypted with TOKEN_ENCRYPTION_KEYS when it is set (it quotes
    -- the user's mail), else plain.
    message TEXT NOT NULL,
    -- Lower goes first.
    priority SMALLINT NOT NULL DEFAULT 0,
    -- Past this, the message is dropped rather than sent (a "9am" briefing is not posted at noon).
    not_after TIMESTAMPTZ,
    state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'sending', 'sent', 'dropped', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    -- A message that Slack could not take for a moment (5xx, timeout) waits until then.
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Set when the message was `sending` as its drainer stopped, and was queued again: it may reach Slack twice.
    resent BOOLEAN NOT NULL DEFAULT false,
    queued_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    sending_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    ts TEXT,
    error TEXT,
    UNIQUE (run_id, account_id, kind)
);

-- What the drainer reads: the messages not finished yet, in the order they go.
CREATE INDEX IF NOT EXISTS slack_outbox_open ON slack_outbox (priority, id) WHERE state IN ('queued', 'sending');

-- Who posts a run's admin summary: the process that finished the run, once its messages are delivered; if it
-- stopped before, the next process to look at the finished run. Taken when posting starts, so it is posted once.
ALTER TABLE briefing_runs ADD COLUMN IF NOT EXISTS summary_taken_at TIMESTAMPTZ;
