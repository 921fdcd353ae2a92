"""Platform traffic for demos and load tests, and `engine loadtest`: generate, capture/export and
replay platform webhook traffic, and measure it.

traffic (signed webhooks for the demo); records (the ndjson format) -> rewrite (ids per run, copies,
target ids) -> schedule (when each request is due) -> replay (open or closed loop, per-conversation
order, retries) -> sink (replies matched at a fake platform) -> report (HDR percentiles, table, JSON,
plot, --check thresholds).
"""
