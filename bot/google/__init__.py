"""Google: the HTTP client and its retry policy, Gmail, error classification, the consent screen, tokens and health."""
