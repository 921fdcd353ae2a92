"""Prometheus metrics, defined once: what operators watch on each process kind."""

from __future__ import annotations

from functools import cache
from typing import TypeVar

from prometheus_client import Counter, Gauge, Histogram

M = TypeVar("M", Counter, Histogram)


@cache
def labelled(metric: M, *values: str) -> M:
    """metric.labels(*values), looked up once (labels() was ~3 % of a sender's CPU). Only for values
    from a small closed set (channel types, outcomes): the cache keeps every combination it saw."""
    return metric.labels(*values)


WEBHOOKS = Counter("engine_webhooks_total", "Webhook requests by channel type and outcome", ["channel_type", "outcome"])
EVENTS_PUBLISHED = Counter("engine_events_published_total", "Inbound events confirmed by the broker")
EVENTS_IGNORED = Counter(
    "engine_events_ignored_total", "Webhook updates of a type the engine does not handle", ["channel_type"]
)
PUBLISH_SECONDS = Histogram("engine_publish_seconds", "Time from webhook received to broker confirm")
PUBLISH_BATCH = Histogram(
    "engine_publish_events",
    "Events per broker message the receiver publishes (those of one shard that waited for a confirm)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 100),
)
INFLIGHT = Gauge("engine_webhooks_inflight", "Webhook requests being handled by this receiver")
EVENTS_UNBOUND = Counter(
    "engine_events_unbound_total",
    "Inbound events dropped: the platform account id in the body is not the channel's external_id",
    ["channel_type"],
)

MESSAGES_PROCESSED = Counter("engine_messages_processed_total", "Inbound messages committed by workers")
DUPLICATES = Counter("engine_duplicates_total", "Inbound events dropped as duplicates", ["stage"])
DEAD_LETTERS = Counter("engine_dead_letters_total", "Messages set aside on the dead-letter queue", ["reason"])
RETRIES = Counter("engine_message_retries_total", "Inbound messages sent to the retry queue")
FLUSH_SECONDS = Histogram("engine_flush_seconds", "Duration of one batched flush transaction")
FLUSH_SIZE = Histogram(
    "engine_flush_messages",
    "Messages per batched flush",
    buckets=(1, 5, 10, 25, 50, 100, 200, 300, 500, 1000),
)
OWNED_SHARDS = Gauge("engine_owned_shards", "Shard queues this process consumes", ["role"])
LANES = Gauge("engine_active_lanes", "Conversations with work in flight in this worker")

SENDS = Counter("engine_sends_total", "Outbound sends by channel type and outcome", ["channel_type", "outcome"])
CLAIMS = Counter(
    "engine_send_claims_total",
    "Replies taken to send, by what claimed their row: the worker's commit (their first copy) or the sender",
    ["by"],
)
SEND_SECONDS = Histogram("engine_send_seconds", "Platform send API latency", ["channel_type"])

CAPTURED = Counter("engine_webhooks_captured_total", "Webhook requests written to channel_webhooks", ["channel_type"])
CAPTURE_DROPPED = Counter(
    "engine_webhooks_capture_dropped_total", "Webhook requests not captured: the writer's queue was full or it failed"
)

RECOVERY_EVENTS = Counter(
    "engine_recovery_events_total",
    "Recovery events posted, by outcome (stored, duplicate, refused reason)",
    ["outcome"],
)
RECOVERY_STEPS = Counter(
    "engine_recovery_steps_total", "Recovery steps decided by schedulers: sent (template|text), held, skipped reason",
    ["outcome"],
)  # fmt: skip
