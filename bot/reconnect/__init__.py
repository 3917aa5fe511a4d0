"""The self-service reconnection: signed links, the consent flow, and the hooks told when a user reconnects."""
