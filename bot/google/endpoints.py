"""Google's public endpoints: the defaults of the GOOGLE_*_URI and GMAIL_API_URL settings."""

from __future__ import annotations

GOOGLE_AUTH_URI = "https://accounts.google.com/o/oauth2/auth"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
GOOGLE_REVOKE_URI = "https://oauth2.googleapis.com/revoke"
GOOGLE_USERINFO_URI = "https://openidconnect.googleapis.com/v1/userinfo"
GMAIL_API_URL = "https://gmail.googleapis.com/"
