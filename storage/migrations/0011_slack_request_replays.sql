-- What Slack has already sent, so that each request takes effect once, whichever replica it reaches.
--
-- A signed HTTP request (its timestamp and signature, as a SHA-256 hash) is remembered until its timestamp is
-- too old for the signature check to accept it anyway (5 minutes, with room for clocks that differ): a
-- captured request replayed within that window is answered without being handled again.
CREATE TABLE IF NOT EXISTS slack_request_replays (
    request_hash BYTEA PRIMARY KEY,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS slack_request_replays_expires_at_idx ON slack_request_replays (expires_at);

-- An Events API event (its event_id) that was handled: Slack delivers an event again, signed anew, when the
-- first delivery was not acknowledged in time, for about 5 minutes; an event_id is kept for an hour.
CREATE TABLE IF NOT EXISTS slack_events_handled (
    event_id TEXT PRIMARY KEY,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS slack_events_handled_expires_at_idx ON slack_events_handled (expires_at);
