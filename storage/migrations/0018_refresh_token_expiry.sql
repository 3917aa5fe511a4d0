-- When the user granted time-based access on Google's consent screen, Google says how long the refresh token
-- lives (refresh_token_expires_in): kept here, so the user is warned a day before and the account is known to
-- be expired after. NULL: the access lasts until it is revoked. The column is only added; no row is rewritten.
ALTER TABLE gmail_tokens ADD COLUMN IF NOT EXISTS refresh_token_expires_at TIMESTAMPTZ;
