"""Settings: every bad or missing variable is named with what to set, and secrets never print."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from bot.config import Settings, ensure_secret_key
from bot.environment import DEFAULT_SCOPES, load_settings
from bot.errors import ConfigError
from bot.google.scopes import Capability
from storage.crypto import generate_key


def problems(make: Callable[..., Settings], **env: str | None) -> str:
    with pytest.raises(ConfigError) as raised:
        make(**env)
    return str(raised.value)


def test_defaults(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    assert settings.port == 8080 and settings.host == "0.0.0.0"
    assert settings.public_base_url == "http://localhost:8080"
    assert settings.oauth_redirect_uri == "http://localhost:8080/oauth/google/callback"
    assert settings.slack_api_url == "https://slack.com/api/"
    assert settings.google_token_uri == "https://oauth2.googleapis.com/token"
    assert settings.google_certs_uri == "https://www.googleapis.com/oauth2/v1/certs"
    assert settings.google_scopes == DEFAULT_SCOPES
    assert settings.required_capabilities == {Capability.READ, Capability.SEND}
    assert settings.uses_embedded_database and settings.token_encryption_keys == ()


def test_every_problem_is_reported_at_once_with_the_variable_and_the_fix(
    make_settings: Callable[..., Settings],
) -> None:
    message = problems(make_settings, PORT="80a", SLACK_BOT_TOKEN="xoxp-user-token", LOG_LEVEL="LOUD")
    assert "3 problems" in message
    assert "PORT='80a'" in message and "1 to 65535" in message
    assert "SLACK_BOT_TOKEN does not start with 'xoxb-'" in message
    assert "LOG_LEVEL" in message
    assert "xoxp-user-token" not in message  # a secret's value is never echoed


@pytest.mark.parametrize(
    "name",
    [
        "GOOGLE_TOKEN_URI",
        "GOOGLE_AUTH_URI",
        "GOOGLE_CERTS_URI",
        "SLACK_API_URL",
        "GMAIL_API_URL",
        "PUBLIC_BASE_URL",
    ],
)
def test_plain_http_only_for_loopback(make_settings: Callable[..., Settings], name: str) -> None:
    assert "use https://" in problems(make_settings, **{name: "http://oauth.example.com/x"})
    for host in ("127.0.0.1:9999", "localhost:9999", "[::1]:9999"):
        make_settings(**{name: f"http://{host}"})  # accepted


def test_slack_api_url_gets_a_trailing_slash(make_settings: Callable[..., Settings]) -> None:
    assert (
        make_settings(SLACK_API_URL="http://127.0.0.1:7000/api").slack_api_url == "http://127.0.0.1:7000/api/"
    )


def test_database_url_requires_secret_key(make_settings: Callable[..., Settings]) -> None:
    message = problems(make_settings, DATABASE_URL="postgresql://u:hunter2pass@db/main_db", SECRET_KEY=None)
    assert "SECRET_KEY is not set" in message and "hunter2pass" not in message
    assert "not a PostgreSQL URL" in problems(make_settings, DATABASE_URL="mysql://db/x")
    assert "shorter than 32" in problems(make_settings, SECRET_KEY="short")


def test_serve_needs_slack_and_google(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(SLACK_BOT_TOKEN=None, SLACK_SIGNING_SECRET=None, GOOGLE_CLIENT_SECRET=None)
    with pytest.raises(ConfigError) as raised:
        settings.require_for_serve()
    message = str(raised.value)
    for name in (
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "GOOGLE_CLIENT_SECRET",
        "GOOGLE_CLIENT_SECRETS_FILE",
    ):
        assert name in message
    make_settings().require_for_serve()  # complete settings pass


def test_serve_needs_the_slack_sign_in_credentials_unless_the_check_is_off(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(ConfigError) as raised:
        make_settings(SLACK_CLIENT_SECRET=None).require_for_serve()
    message = str(raised.value)
    assert "SLACK_CLIENT_ID / SLACK_CLIENT_SECRET" in message and "IDENTITY_CHECK=off" in message
    assert make_settings().identity_warning() is None

    off = make_settings(SLACK_CLIENT_ID=None, SLACK_CLIENT_SECRET=None, IDENTITY_CHECK="off")
    off.require_for_serve()  # allowed, when asked for explicitly
    warning = off.identity_warning()
    assert warning is not None and "forwarded" in warning and "SLACK_CLIENT_ID" in warning
    assert "IDENTITY_CHECK='maybe'" in problems(make_settings, IDENTITY_CHECK="maybe")


def test_identity_settings_have_defaults_and_are_checked(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    assert (settings.identity_check, settings.identity_ttl) == ("slack", timedelta(days=30))
    assert settings.slack_oidc_authorize_url == "https://slack.com/openid/connect/authorize"
    assert settings.slack_oidc_jwks_url == "https://slack.com/openid/connect/keys"
    assert settings.slack_redirect_uri == "http://localhost:8080/oauth/slack/callback"
    assert make_settings(IDENTITY_TTL="12h").identity_ttl == timedelta(hours=12)
    assert "IDENTITY_TTL" in problems(make_settings, IDENTITY_TTL="forever")
    assert "SLACK_OIDC_JWKS_URL" in problems(make_settings, SLACK_OIDC_JWKS_URL="http://keys.example.com/")
    assert "fake-slack-client-secret" not in repr(settings)
    assert "fake-slack-client-secret" in settings.secret_values()


def test_client_secrets_file(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    path.write_text(
        json.dumps(
            {
                "web": {
                    "client_id": "file-client.apps.googleusercontent.com",
                    "client_secret": "GOCSPX-from-file",
                    "auth_uri": "https://accounts.google.com/o/oauth2/auth",
                    "token_uri": "https://oauth2.googleapis.com/token",
                }
            }
        )
    )
    settings = make_settings(
        GOOGLE_CLIENT_ID=None, GOOGLE_CLIENT_SECRET=None, GOOGLE_CLIENT_SECRETS_FILE=str(path)
    )
    assert settings.google_client_id == "file-client.apps.googleusercontent.com"
    assert (
        settings.google_client_secret is not None
        and settings.google_client_secret.reveal() == "GOCSPX-from-file"
    )

    path.write_text("{not json")
    assert "cannot be read as JSON" in problems(make_settings, GOOGLE_CLIENT_SECRETS_FILE=str(path))
    assert "does not exist" in problems(make_settings, GOOGLE_CLIENT_SECRETS_FILE=str(tmp_path / "nope.json"))
    path.write_text(json.dumps({"other": {}}))
    assert "'Web application'" in problems(make_settings, GOOGLE_CLIENT_SECRETS_FILE=str(path))


def test_encryption_keys(make_settings: Callable[..., Settings]) -> None:
    first, second = generate_key(), generate_key()
    assert len(make_settings(TOKEN_ENCRYPTION_KEYS=f"{first}, {second}").token_encryption_keys) == 2
    message = problems(make_settings, TOKEN_ENCRYPTION_KEYS=f"{first},c2hvcnQ=")
    assert "entry 2 of TOKEN_ENCRYPTION_KEYS" in message and first[:10] not in message


def test_scopes_must_allow_reading(make_settings: Callable[..., Settings]) -> None:
    assert "GOOGLE_SCOPES" in problems(make_settings, GOOGLE_SCOPES="openid email gmail.send")
    settings = make_settings(GOOGLE_SCOPES="openid,email,gmail.readonly")
    assert settings.required_capabilities == {Capability.READ}


def test_secrets_never_print(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(DATABASE_URL="postgresql://u:dbpass-123456@db/main_db")
    text = repr(settings) + str(settings)
    for secret in (
        "xoxb-test-bot-token",
        "test-signing-secret",
        "GOCSPX-test-client-secret",
        "dbpass-123456",
        "test-secret-key-that-is-long-enough",
    ):
        assert secret not in text
    assert "dbpass-123456" in settings.secret_values()


def test_env_file_sits_under_the_environment(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=9000\nHOST=127.0.0.1\nSLACK_BOT_TOKEN=xoxb-from-file\n")
    settings = load_settings(
        environ={"PORT": "9100", "GMAIL_RECONNECT_DATA_DIR": str(tmp_path)}, env_file=env_file
    )
    assert settings.port == 9100  # the environment wins
    assert settings.host == "127.0.0.1"
    assert settings.slack_bot_token is not None and settings.slack_bot_token.reveal() == "xoxb-from-file"


def test_embedded_default_generates_a_secret_key_once(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(SECRET_KEY=None)
    assert settings.secret_key is None
    first = ensure_secret_key(settings)
    assert first.secret_key is not None and len(first.secret_key.reveal()) >= 32
    path = settings.data_dir / "secret_key"
    assert path.stat().st_mode & 0o777 == 0o600
    reloaded = make_settings(SECRET_KEY=None)
    assert reloaded.secret_key == first.secret_key
