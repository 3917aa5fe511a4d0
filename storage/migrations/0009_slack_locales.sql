-- Each Slack user's language as users.info last gave it, so that a daily run need not ask Slack again for
-- every user every day. A stored language is used until fresh_until (a week, give or take a day, so that the
-- users first seen on one day are not all asked again on the same later day).
CREATE TABLE IF NOT EXISTS slack_locales (
    slack_user_id TEXT PRIMARY KEY,
    locale TEXT NOT NULL,
    fetched_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    fresh_until TIMESTAMPTZ NOT NULL
);
