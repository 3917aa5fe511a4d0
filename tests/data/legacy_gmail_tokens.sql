-- gmail_tokens as a deployment holds it today: its original DDL, indexes and trigger, three imported rows,
-- then what later deployments did: token_data made nullable, the is_equipped flag, three users whose token is NULL.
CREATE TABLE gmail_tokens (
    id SERIAL PRIMARY KEY,
    user_id VARCHAR(100) UNIQUE NOT NULL,
    robing_id VARCHAR(50),
    token_data JSONB NOT NULL,
    oauth_config JSONB,
    scopes JSONB,
    metadata JSONB,
    expiry TIMESTAMP,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX idx_gmail_tokens_user_id ON gmail_tokens(user_id);
CREATE INDEX idx_gmail_tokens_robing_id ON gmail_tokens(robing_id);
CREATE INDEX idx_gmail_tokens_token_data ON gmail_tokens USING GIN (token_data);
CREATE INDEX idx_gmail_tokens_oauth_config ON gmail_tokens USING GIN (oauth_config);
CREATE OR REPLACE FUNCTION update_updated_at_column() RETURNS TRIGGER AS $$
BEGIN
    NEW.updated_at = CURRENT_TIMESTAMP;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER update_gmail_tokens_updated_at BEFORE UPDATE ON gmail_tokens
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();

INSERT INTO gmail_tokens (user_id, robing_id, token_data, oauth_config, scopes, metadata, expiry, created_at, updated_at) VALUES
('heejae', 'rb8001',
 '{"access_token": "ya29.heejae-access", "refresh_token": "1//heejae-refresh", "token_type": "Bearer"}',
 '{"client_id": "legacy.apps.googleusercontent.com", "client_secret": "GOCSPX-legacy", "token_uri": "https://oauth2.googleapis.com/token", "auth_uri": "https://accounts.google.com/o/oauth2/auth"}',
 '["https://www.googleapis.com/auth/gmail.modify"]',
 '{"email": "heejae@gmail.com", "display_name": "희재", "account_type": "gmail", "slack_user_id": "U091UNVE41M", "source_file": "heejae_gmail.json", "imported_at": "2025-08-18"}',
 '2025-08-18 10:00:00', '2025-08-18 09:00:00', '2025-08-18 09:00:00'),
('test', 'rb8001',
 '{"access_token": "ya29.test-access", "refresh_token": "1//test-refresh", "token_type": "Bearer"}',
 '{"client_id": "legacy.apps.googleusercontent.com", "client_secret": "GOCSPX-legacy", "token_uri": "https://oauth2.googleapis.com/token", "auth_uri": "https://accounts.google.com/o/oauth2/auth"}',
 '["https://www.googleapis.com/auth/gmail.send", "https://www.googleapis.com/auth/gmail.modify"]',
 '{"email": "test@gmail.com", "display_name": "테스트", "account_type": "gmail", "source_file": "test_gmail.json", "imported_at": "2025-08-18"}',
 '2025-08-18 11:00:00', '2025-08-18 09:00:01', '2025-08-18 09:00:01'),
('unknown', NULL,
 '{"access_token": "ya29.unknown-access", "refresh_token": "1//unknown-refresh", "token_type": "Bearer"}',
 '{"client_id": "legacy.apps.googleusercontent.com", "client_secret": "GOCSPX-legacy", "token_uri": "https://oauth2.googleapis.com/token", "auth_uri": "https://accounts.google.com/o/oauth2/auth"}',
 '["https://www.googleapis.com/auth/userinfo.email", "https://www.googleapis.com/auth/userinfo.profile", "openid"]',
 '{"email": "unknown@gmail.com", "account_type": "gmail", "source_file": "unknown_gmail.json", "imported_at": "2025-08-18"}',
 NULL, '2025-08-18 09:00:02', '2025-08-18 09:00:02');

ALTER TABLE gmail_tokens ALTER COLUMN token_data DROP NOT NULL;
ALTER TABLE gmail_tokens ADD COLUMN is_equipped BOOLEAN DEFAULT false;
INSERT INTO gmail_tokens (user_id, robing_id, token_data, metadata, is_equipped, created_at, updated_at) VALUES
('1e16e9d5-59f3-54da-a661-8abeabff4230', 'rb8001', NULL,
 '{"email": "goeun2dc@gmail.com", "username": "happybell80", "slack_user_id": "U0HAPPYBELL"}', true,
 '2025-08-20 08:00:00', '2025-08-25 09:00:00'),
('b6ea2ee0-a15a-5cf4-93a9-a9ca20d4c4a0', 'rb8001', NULL,
 '{"email": "0914eagle@gmail.com", "username": "0914eagle", "slack_user_id": "U0EAGLE0914"}', true,
 '2025-08-20 08:00:01', '2025-08-25 09:00:01'),
('69ae4ea9-a15f-5110-9f5d-6568e380fcfb', 'rb8001', NULL,
 '{"email": "cdctfm@gmail.com", "username": "cdctfm"}', true,
 '2025-08-20 08:00:02', '2025-08-25 09:00:02');
