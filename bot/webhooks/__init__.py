"""Webhooks for the services that use the API: signing, and the background sender of the outbox."""
