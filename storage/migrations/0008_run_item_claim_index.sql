-- Claiming the next account of a run reads the open items in account order: with this index each claim
-- costs the same at the first account as at the ten-thousandth (the run-only index made each claim sort every
-- open item, so a run cost grew with the square of its accounts).
CREATE INDEX IF NOT EXISTS briefing_run_items_claim_idx
    ON briefing_run_items (run_id, account_id) WHERE state <> 'done';
DROP INDEX IF EXISTS briefing_run_items_open_idx;
