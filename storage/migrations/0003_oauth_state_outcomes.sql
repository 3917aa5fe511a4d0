-- What the consent callback needs to finish a flow and to answer a link that was already used: the exact
-- redirect URI and scopes of the authorization request, the link's own expiry (so a retry link is the same
-- link), and how the flow ended.
ALTER TABLE oauth_states ADD COLUMN IF NOT EXISTS redirect_uri TEXT;
ALTER TABLE oauth_states ADD COLUMN IF NOT EXISTS scopes TEXT[];
ALTER TABLE oauth_states ADD COLUMN IF NOT EXISTS link_expires_at TIMESTAMPTZ;
ALTER TABLE oauth_states ADD COLUMN IF NOT EXISTS completed_at TIMESTAMPTZ;
ALTER TABLE oauth_states ADD COLUMN IF NOT EXISTS outcome TEXT;
ALTER TABLE oauth_states ADD COLUMN IF NOT EXISTS account_id INTEGER REFERENCES gmail_tokens (id) ON DELETE SET NULL;
CREATE INDEX IF NOT EXISTS oauth_states_link_idx ON oauth_states (link_id) WHERE outcome = 'connected';
