"""The worker's batch: the rows of many messages, flushed together, then their replies published,
then the messages acked.

    flusher: every flush_interval_ms or batch_size messages -> one transaction -> publish -> ack

Nothing is acked before everything it caused is committed and its replies confirmed by the broker,
so a crash at any point loses nothing. A duplicate found by the idempotency ledger at commit time
(an event a previous owner committed but never acked) has its rows and replies left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

import asyncpg
from aio_pika.abc import AbstractExchange
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from engine import metrics
from engine.bus.connection import make_message
from engine.bus.consumer import Delivery, ShardConsumer
from engine.bus.topology import Topology
from engine.models import OutboundMessage
from engine.store import messages as store
from engine.worker.conversations import ConversationCache, Entry

log = logging.getLogger(__name__)

TRANSIENT_DB_ERRORS = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)


@dataclass(slots=True)
class Batch:
    started: float = field(default_factory=time.monotonic)  # when the batch was opened
    rows: store.FlushRows = field(default_factory=store.FlushRows)
    deliveries: list[tuple[Delivery, Entry | None]] = field(default_factory=list)  # to ack after commit
    messages: int = 0  # inbound messages whose effects are staged here

    def __len__(self) -> int:
        return len(self.deliveries)


class Flusher:
    """Owns the open batch. Flushes are serialised, so batches commit in the order they were staged
    (and each conversation's rows in order)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        consumer: ShardConsumer,
        outbound: AbstractExchange,
        topology: Topology,
        cache: ConversationCache,
        *,
        batch_size: int,
        interval_ms: float,
    ) -> None:
        self.pool = pool
        self.consumer = consumer
        self.outbound = outbound
        self.topology = topology
        self.cache = cache
        self.batch_size = batch_size
        self.interval = interval_ms / 1000
        self.batch = Batch()
        self.ready = asyncio.Event()  # the open batch has items
        self.full = asyncio.Event()  # ... and reached batch_size (or someone wants it flushed now)
        self.lock = asyncio.Lock()

    def add(self, delivery: Delivery, entry: Entry | None = None) -> None:
        """Ack this delivery with the open batch (its rows, if any, are staged in batch.rows)."""
        self.batch.deliveries.append((delivery, entry))
        self.ready.set()
        if len(self.batch) >= self.batch_size:
            self.full.set()

    async def run(self) -> None:
        # A batch is flushed `interval` after it was opened (or at batch_size). Under load the next
        # batch fills while the previous one commits, so it is flushed as soon as that ends: batches
        # grow with the load and latency stays about one commit.
        while True:
            await self.ready.wait()
            remaining = self.batch.started + self.interval - time.monotonic()
            if remaining > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.full.wait(), remaining)
            await self.flush()

    async def flush(self) -> None:
        """Commit the open batch, publish its replies, ack its messages."""
        async with self.lock:
            batch, self.batch = self.batch, Batch()
            self.ready.clear()
            self.full.clear()
            if not len(batch):
                return
            started = time.perf_counter()
            duplicates = await self._commit(batch.rows)
            if duplicates:
                metrics.DUPLICATES.labels("ledger").inc(len(duplicates))
                for key in duplicates:
                    self.cache.evict(batch.rows.events[key])  # its in-memory state took a duplicate
            await self._publish([m for key, m, _ in batch.rows.outbound if key not in duplicates])
            for delivery, entry in batch.deliveries:
                await self.consumer.ack(delivery)
                if entry is not None:
                    entry.pending -= 1
            self.cache.trim()
            metrics.FLUSH_SECONDS.observe(time.perf_counter() - started)
            metrics.FLUSH_SIZE.observe(batch.messages)
            metrics.MESSAGES_PROCESSED.inc(batch.messages - len(duplicates))

    async def _commit(self, rows: store.FlushRows) -> set[store.EventKey]:
        # Transient database errors are retried here, with the same batch: every write in it is
        # idempotent. Past the attempts the error propagates, the flusher dies and the process
        # exits; the broker redelivers everything unacked to whoever owns the shards next.
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(TRANSIENT_DB_ERRORS),
            stop=stop_after_attempt(5),
            wait=wait_exponential_jitter(multiplier=0.1, max=3),
            reraise=True,
        ):
            with attempt:
                async with self.pool.acquire() as conn, conn.transaction():
                    duplicates = await store.flush(conn, rows)
        return duplicates

    async def _publish(self, replies: list[OutboundMessage]) -> None:
        """Publish with confirms. If the broker fails us here the rows are committed as 'queued',
        and the sender's sweeper re-publishes stale queued rows, so the reply is late, not lost."""
        publishes = [
            self.outbound.publish(
                make_message(reply, message_id=reply.id, correlation_id=reply.conversation_id),
                routing_key=self.topology.outbound_key(reply),
                mandatory=True,
            )
            for reply in replies
        ]
        results = await asyncio.gather(*publishes, return_exceptions=True)
        if failed := [r for r in results if isinstance(r, BaseException)]:
            log.error("%d replies not confirmed by the broker (%r); the sweeper will resend", len(failed), failed[0])
