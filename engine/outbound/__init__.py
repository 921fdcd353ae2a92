"""The sender: claim -> rate limit -> send through the platform API -> record; rate limits, retry policy."""
