-- One row per scheduled run (kind and day), and one item per account in it. Replicas claim items with
-- FOR UPDATE SKIP LOCKED, so a run happens once however many processes start it; an item claimed by a
-- process that died is claimed again after a while, so a restarted run finishes.
CREATE TABLE IF NOT EXISTS briefing_runs (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('preflight', 'briefing')),
    day DATE NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ,
    UNIQUE (kind, day)
);

CREATE TABLE IF NOT EXISTS briefing_run_items (
    run_id BIGINT NOT NULL REFERENCES briefing_runs (id) ON DELETE CASCADE,
    account_id INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'claimed', 'done')),
    claimed_by TEXT,
    claimed_at TIMESTAMPTZ,
    outcome TEXT,
    detail TEXT,
    finished_at TIMESTAMPTZ,
    PRIMARY KEY (run_id, account_id)
);
CREATE INDEX IF NOT EXISTS briefing_run_items_open_idx ON briefing_run_items (run_id) WHERE state <> 'done';
