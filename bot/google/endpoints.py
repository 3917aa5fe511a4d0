"""Google's public endpoints: the defaults of the GOOGLE_*_URI and GMAIL_API_URL settings."""

from __future__ import annotations

GOOGLE_AUTH_URI = "https://accounts.google.com/o/oauth2/auth"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
GOOGLE_REVOKE_URI = "https://oauth2.googleapis.com/revoke"
GOOGLE_USERINFO_URI = "https://openidconnect.googleapis.com/v1/userinfo"
# The x509 certificates (PEM, keyed by kid) of the keys that sign Google's ID tokens.
GOOGLE_CERTS_URI = "https://www.googleapis.com/oauth2/v1/certs"
GMAIL_API_URL = "https://gmail.googleapis.com/"
# Cross-Account Protection (RISC): the issuer's configuration (issuer, jwks_uri) and the stream management API.
GOOGLE_RISC_CONFIG_URI = "https://accounts.google.com/.well-known/risc-configuration"
GOOGLE_RISC_API_URL = "https://risc.googleapis.com/v1beta/"
