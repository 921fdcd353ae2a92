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

from engine import metrics
from engine.bus.connection import replies_message
from engine.bus.consumer import Delivery, ShardConsumer
from engine.bus.topology import Topology
from engine.models import OutboundMessage
from engine.store import messages as store
from engine.store.pool import is_transient, while_away
from engine.worker.conversations import ConversationCache, Entry

log = logging.getLogger(__name__)

# What the database (or encoding a value for it) says about the rows themselves: split the batch to
# find whose. Anything else is a bug that a restart may fix: the flusher dies, the process exits.
REFUSALS = (asyncpg.PostgresError, ValueError, OverflowError)


@dataclass(slots=True)
class Batch:
    started: float = field(default_factory=time.monotonic)  # when the batch was opened
    rows: store.FlushRows = field(default_factory=store.FlushRows)
    # to settle after the commit, each with the key its rows are tagged with (None: it has no rows)
    deliveries: list[tuple[Delivery, Entry | None, store.EventKey | None]] = field(default_factory=list)
    messages: int = 0  # inbound messages whose effects are staged here

    def __len__(self) -> int:
        return len(self.deliveries)


class Flusher:
    """Owns the open batch. Flushes are serialised, so batches commit in the order they were staged
    (and each conversation's rows in order).

    A database that is away (restart, failover) is waited out: the batch is retried, its messages stay
    unacked, and with the prefetch full the broker sends no more. A batch the database refuses for
    what it holds is split until the refused deliveries are found; they are dead-lettered with the
    database's reason, the rest commits, and the worker goes on."""

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
        self.stopping = False  # at shutdown, a database outage is not waited out

    def add(self, delivery: Delivery, entry: Entry | None = None, key: store.EventKey | None = None) -> None:
        """Settle this delivery with the open batch; `key` tags its staged rows, if it has any."""
        self.batch.deliveries.append((delivery, entry, key))
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
        """Commit the open batch, publish its replies, settle its messages."""
        async with self.lock:
            batch, self.batch = self.batch, Batch()
            self.ready.clear()
            self.full.clear()
            if not len(batch):
                return
            started = time.perf_counter()
            refused: dict[store.EventKey, str] = {}
            duplicates = await self._commit_or_split(batch.rows, refused)
            if duplicates:
                metrics.DUPLICATES.labels("ledger").inc(len(duplicates))
                for duplicate in duplicates:
                    self.cache.evict(batch.rows.events[duplicate])  # its in-memory state took a duplicate
            skip = duplicates | refused.keys()
            await self._publish([m for key, m, _ in batch.rows.outbound if key not in skip])
            acks = []
            for delivery, entry, key in batch.deliveries:
                if key in refused:
                    await self.consumer.dead_letter(delivery, refused[key], "database")
                else:
                    acks.append(delivery)
                if entry is not None:
                    entry.pending -= 1
                    if key in refused:  # its state holds what the database refused: reload it
                        self.cache.evict(entry.conversation.id)
            await self.consumer.ack_many(acks)  # one multiple-ack where the tags allow it
            self.cache.trim()
            metrics.FLUSH_SECONDS.observe(time.perf_counter() - started)
            metrics.FLUSH_SIZE.observe(batch.messages)
            metrics.MESSAGES_PROCESSED.inc(batch.messages - len(duplicates) - len(refused))

    async def _commit_or_split(self, rows: store.FlushRows, refused: dict[store.EventKey, str]) -> set[store.EventKey]:
        """Commit the rows; if the database refuses them, commit each half (in order) and recurse until
        every refused delivery is in `refused` with the reason. Returns the ledger's duplicates."""
        try:
            return await self._commit(rows)
        except REFUSALS as exc:
            if is_transient(exc):
                raise  # only while stopping: the broker redelivers what we could not commit
            keys = _keys(rows)
            if len(keys) <= 1:
                reason = _reason(exc)
                log.error("the database refused delivery %s: %s", keys, reason)
                refused.update(dict.fromkeys(keys, reason))
                return set()
            log.warning("batch of %d refused (%s); splitting it", len(keys), type(exc).__name__)
        half = len(keys) // 2
        duplicates = await self._commit_or_split(rows.subset(set(keys[:half])), refused)
        return duplicates | await self._commit_or_split(rows.subset(set(keys[half:])), refused)

    async def _commit(self, rows: store.FlushRows) -> set[store.EventKey]:
        # Transient errors are retried with the same rows (every write is idempotent) for as long as
        # the database is away, except at shutdown.
        async for attempt in while_away(lambda: self.stopping):
            with attempt:
                async with self.pool.acquire() as conn, conn.transaction():
                    duplicates = await store.flush(conn, rows)
        return duplicates

    async def _publish(self, replies: list[OutboundMessage]) -> None:
        """Publish with confirms, one message per outbound queue carrying its replies (in order), as
        their first copy: published once, so the commit was their claim (the sender skips its own). If
        the broker fails us here the rows are committed as 'queued', and the sender's sweeper
        re-publishes stale queued rows, so the reply is late, not lost."""
        publishes = [
            self.outbound.publish(replies_message(group, first_copy=True), routing_key=key, mandatory=True)
            for key, group in self.topology.group_replies(replies)
        ]
        results = await asyncio.gather(*publishes, return_exceptions=True)
        if failed := [r for r in results if isinstance(r, BaseException)]:
            log.error("%d reply messages not confirmed (%r); the sweeper will resend them", len(failed), failed[0])


def _keys(rows: store.FlushRows) -> list[store.EventKey]:
    """The deliveries that have rows in the batch, in staging order."""
    keys = [*rows.events, *(s[0] for s in rows.states), *(s[0] for s in rows.statuses)]
    return list(dict.fromkeys(keys))


def _reason(exc: BaseException) -> str:
    sqlstate = getattr(exc, "sqlstate", None)
    return f"database refused the rows: {type(exc).__name__}{f' [{sqlstate}]' if sqlstate else ''}: {exc}"[:500]
