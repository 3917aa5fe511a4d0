-- Webhooks for the services that use the API: each subscription, and an outbox of deliveries written in the
-- same transaction as the status change they announce, so that an event is neither lost (the change committed,
-- the message not) nor invented (the message sent, the change rolled back).
CREATE TABLE IF NOT EXISTS webhooks (
    id SERIAL PRIMARY KEY,
    url TEXT NOT NULL,
    events TEXT[] NOT NULL,
    -- The signing secret: encrypted with TOKEN_ENCRYPTION_KEYS when it is set (v1:<kid>:...), else plain.
    secret TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Set when the receiver answered 410 Gone: nothing more is sent until the webhook is added again.
    disabled_at TIMESTAMPTZ,
    disabled_reason TEXT
);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id BIGSERIAL PRIMARY KEY,
    webhook_id INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id UUID NOT NULL,
    event_type TEXT NOT NULL,
    -- The exact body sent on every attempt, so a redelivery is the same bytes.
    body TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- While pending: when it may next be claimed. A claim moves it past the attempt's timeout (a lease), so a
    -- sender that dies mid-attempt leaves the delivery to another one instead of losing it.
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_attempt_at TIMESTAMPTZ,
    last_result TEXT,
    finished_at TIMESTAMPTZ,
    UNIQUE (webhook_id, event_id)
);

-- What the senders look for: the pending deliveries that are due.
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
