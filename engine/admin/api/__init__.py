"""The admin HTTP API under /api/v1: tokens, tenant configuration, conversations and agents."""
