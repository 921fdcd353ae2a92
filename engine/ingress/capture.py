"""Webhook capture: record what platforms deliver into channel_webhooks, for `engine loadtest export`.

The receiver calls `WebhookCapture.offer()` once per POST after its answer is decided. Off (the
default) it costs a setting check and a dict lookup. On, it copies the raw body and the headers that
matter onto a bounded queue and returns; a background task writes batches with one INSERT each. A
full queue drops the request and counts it (engine_webhooks_capture_dropped_total): capture never
slows or fails a webhook. Secret headers (Telegram's secret token, Authorization, cookies) are never
kept; the signatures are, so a captured body can still be verified against its signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import asyncpg

from engine import metrics
from engine.models import ChannelInfo, InboundEvent, StatusEvent
from engine.settings import Settings
from engine.store import webhooks
from engine.store.webhooks import CapturedWebhook

log = logging.getLogger(__name__)

# Headers a replay or an audit needs; everything else (and any secret) is left out.
KEPT_HEADERS = (
    "Content-Type",
    "User-Agent",
    "X-Hub-Signature-256",
    "X-Slack-Signature",
    "X-Slack-Request-Timestamp",
    "X-Slack-Retry-Num",
    "X-Slack-Retry-Reason",
)
OUTCOMES = {200: "accepted", 400: "malformed", 401: "unauthorized", 403: "unauthorized", 503: "unavailable"}
BATCH = 500
MAINTAIN_EVERY = 3600.0  # seconds between partition upkeep runs (create ahead, drop expired)


def sample_rate(settings: Settings, channel: ChannelInfo) -> float:
    """The share of this channel's requests to capture: the channel's config wins over the setting."""
    option = channel.config.get("capture")
    if option is None:
        return settings.capture_sample if settings.capture_webhooks else 0.0
    if isinstance(option, Mapping):
        return float(option.get("sample", 1.0))
    return 1.0 if option else 0.0


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: headers[name] for name in KEPT_HEADERS if name in headers}


def outcome_of(status: int, events: Sequence[InboundEvent | StatusEvent] | None) -> str:
    if status == 200 and not events:
        return "ignored"
    return OUTCOMES.get(status, f"http_{status}")


class WebhookCapture:
    """Bounded queue + background batch writer: the writer starts with the first offer(); close() at
    shutdown writes what is queued (for up to the shutdown grace)."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings
        self._queue: asyncio.Queue[CapturedWebhook] = asyncio.Queue(settings.capture_queue)
        self._task: asyncio.Task[None] | None = None
        self._next_upkeep = 0.0

    def wants(self, channel: ChannelInfo) -> bool:
        """Whether to capture this request of `channel` (its capture setting, then the sample)."""
        rate = sample_rate(self._settings, channel)
        return rate >= 1.0 or (rate > 0.0 and random.random() < rate)

    def offer(
        self,
        channel: ChannelInfo,
        headers: Mapping[str, str],
        body: bytes,
        status: int,
        events: Sequence[InboundEvent | StatusEvent] | None,
    ) -> None:
        """Queue one answered request for capture (the caller asked wants() first). Never blocks:
        a full queue drops the request and counts it."""
        key = events[0].conversation_key if events else None
        item = CapturedWebhook(
            channel_id=channel.id,
            tenant_id=channel.tenant_id,
            channel_type=channel.type.value,
            events=len(events or ()),
            outcome=outcome_of(status, events),
            status=status,
            headers=kept_headers(headers),
            conversation_key=key,
            body=body,
            received_at=datetime.now(UTC),
        )
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            metrics.CAPTURE_DROPPED.inc()
            return
        if self._task is None:
            self._task = asyncio.create_task(self._write_loop(), name="webhook-capture")

    async def close(self) -> None:
        """Write what is queued, then stop the writer."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), self._settings.shutdown_grace)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._upkeep()
                await webhooks.insert_webhooks(self._pool, batch)
                for item in batch:
                    metrics.CAPTURED.labels(item.channel_type).inc()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                # A lost capture batch must not take the receiver down; it is counted and logged.
                metrics.CAPTURE_DROPPED.inc(len(batch))
                log.warning("webhook capture: batch of %d not written: %s", len(batch), type(exc).__name__)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _upkeep(self) -> None:
        loop_time = asyncio.get_running_loop().time()
        if loop_time < self._next_upkeep:
            return
        self._next_upkeep = loop_time + MAINTAIN_EVERY
        await webhooks.ensure_partitions(self._pool, 2)
        dropped = await webhooks.drop_old_partitions(self._pool, self._settings.capture_retention_days)
        if dropped:
            log.info("webhook capture: dropped %d expired day partitions", dropped)
