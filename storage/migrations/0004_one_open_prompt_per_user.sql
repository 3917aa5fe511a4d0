-- One open Reconnect Gmail prompt per Slack user, whatever the incident: a new cause updates the open prompt
-- (and its DM) instead of sending a second one. Older duplicates, if any, are dismissed, not deleted.
UPDATE reconnect_prompts AS p
   SET state = 'dismissed', updated_at = now()
 WHERE p.state = 'open'
   AND EXISTS (
       SELECT 1 FROM reconnect_prompts AS newer
        WHERE newer.state = 'open' AND newer.slack_user_id = p.slack_user_id AND newer.id > p.id
   );

CREATE UNIQUE INDEX IF NOT EXISTS reconnect_prompts_one_open_per_user_idx
    ON reconnect_prompts (slack_user_id) WHERE state = 'open';
