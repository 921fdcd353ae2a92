"""`engine worker`: consume the shard queues this process owns, run each conversation in order,
flush the effects of many messages in one transaction, publish the replies, then ack.

    on_message -> lane(conversation) -> dedupe -> brain.respond -> stage into the open Batch
    flusher: every flush_interval_ms or batch_size messages -> one transaction -> publish -> ack

Nothing is acked before everything it caused is committed and its replies confirmed by the broker,
so a crash at any point loses nothing; redeliveries are recognised (state.Entry.recent and the
inbound_events ledger) and produce no second row or reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from typing import Any

import aiohttp
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from engine import bus, envelope, metrics
from engine.batch import Batch, HistoryRow, utc
from engine.brain import Brain
from engine.lanes import Lanes
from engine.models import (
    COMMAND_STATUS,
    ConversationCommand,
    InboundEvent,
    MessageType,
    OutboundMessage,
    Outcome,
    StatusEvent,
    stable_id,
)
from engine.settings import Settings
from engine.shards import Membership, ShardSubscriptions
from engine.state import Entry, StateCache
from engine.store import messages as store
from engine.store.pool import create_pool
from workers.runtime import run, until_stop_or_failure

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # a message whose handling raises goes to the retry queue, then to the dead letters
ATTEMPT_HEADER = "x-attempts"
TRANSIENT_DB_ERRORS = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)


class Worker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topology = bus.Topology(settings.topology_prefix, settings.shards)
        self.lanes = Lanes()
        self.batch = Batch()
        self.batch_ready = asyncio.Event()  # the open batch has items
        self.batch_full = asyncio.Event()  # ... and reached batch_size
        self.flush_lock = asyncio.Lock()

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        self.pool = await create_pool(s.database_url, max_size=5)
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=s.send_timeout))
        self.brain = Brain(self.pool, self.http, s)
        await self.brain.start()
        # The compiled definitions are large and long-lived: keep the cyclic GC from rescanning
        # them on every collection (a 4x routing throughput difference in tests/bench).
        gc.freeze()
        self.state = StateCache(self.pool, max_entries=100_000)
        self.membership = Membership(self.pool, "worker", s.lease_ttl)
        self.connection: AbstractRobustConnection = await bus.connect(s.amqp_url, self.membership.me)
        self.channel: AbstractChannel = await bus.open_channel(self.connection, prefetch=s.prefetch)
        await bus.declare_topology(self.channel, self.topology)
        self.outbound = await self.channel.get_exchange(self.topology.outbound)
        self.subs = ShardSubscriptions(
            self.channel, self.membership, s.shards, self.topology.inbound_queue, self._on_message,
            self._wait_released,
        )  # fmt: skip
        tasks = [
            asyncio.create_task(self.subs.follow(s.heartbeat_interval), name="membership"),
            asyncio.create_task(self._flush_loop(), name="flusher"),
        ]
        log.info("worker %s started", self.membership.me)
        died = await until_stop_or_failure(stop, tasks)
        await self._shutdown(tasks)
        if died:
            raise SystemExit(1)

    async def _wait_released(self, shard: int) -> None:
        """Before a shard moves away: flush and ack what we hold of it, then drop its state."""
        self.batch_full.set()  # flush now rather than at the interval
        if not await self.subs.wait_idle(shard, self.settings.shutdown_grace):
            log.warning("shard %d handed over with messages in flight; they go back to the broker", shard)
        self.state.evict_shard(shard)

    # --- per message --------------------------------------------------------------------------

    def _on_message(self, shard: int, message: AbstractIncomingMessage) -> None:
        try:
            item = envelope.decode(message.body)
            if isinstance(item, OutboundMessage):
                raise envelope.EnvelopeError("an outbound message on an inbound shard")
        except envelope.EnvelopeError as exc:
            reason = str(exc)
            self.lanes.submit(
                ("dead", message.delivery_tag), lambda: self._dead_letter(shard, message, reason, "decode")
            )
            return
        if isinstance(item, StatusEvent):
            self.batch.statuses.append(item)
            self._stage_ack(shard, message)
        elif isinstance(item, ConversationCommand):
            self.lanes.submit((item.channel_id, item.conversation_key), lambda: self._command(shard, message, item))
        else:
            self.lanes.submit((item.channel_id, item.conversation_key), lambda: self._handle(shard, message, item))

    async def _command(self, shard: int, message: AbstractIncomingMessage, command: ConversationCommand) -> None:
        """Apply an operator's command in the conversation's lane, after the messages before it."""
        entry = await self.state.get_existing(command.channel_id, command.conversation_key, shard)
        if entry is None:
            log.warning("%s for an unknown conversation %s: ignored", command.action, command.conversation_key)
            self._stage_ack(shard, message)
            return
        entry.conversation.status = COMMAND_STATUS[command.action]
        if command.action == "close":
            entry.conversation.flow_id = entry.conversation.node_id = entry.conversation.flow_version = None
        self.batch.stage_state(entry.conversation, entry.contact, utc(time.time()))
        entry.pending += 1
        self._stage_ack(shard, message, entry)

    async def _handle(self, shard: int, message: AbstractIncomingMessage, event: InboundEvent) -> None:
        try:
            entry = await self.state.get(event, shard)
        except Exception:  # the database is unreachable: hand the message back, in its place
            log.exception("loading conversation state for %s failed; requeueing", event.idempotency_key)
            await asyncio.sleep(1.0)
            await message.nack(requeue=True)
            self.subs.done(shard)
            return
        if entry.seen(event.event_id):
            metrics.DUPLICATES.labels("cache").inc()
            self._stage_ack(shard, message)
            return
        conversation, contact = entry.conversation, entry.contact
        if event.contact_name:
            contact.name = event.contact_name
        contact.attributes.update(event.contact_attributes)
        saved = entry.snapshot()
        try:
            outcome = await self.brain.respond(event, conversation, contact)
        except Exception as exc:  # a bug or a failing dependency in the brain: retry, then set aside
            log.exception("handling event %s failed", event.idempotency_key)
            entry.restore(saved)  # undo what the failed attempt changed
            await self._retry_or_dead_letter(shard, message, repr(exc))
            return
        self._stage(shard, message, entry, event, outcome)

    def _stage(
        self,
        shard: int,
        message: AbstractIncomingMessage,
        entry: Entry,
        event: InboundEvent,
        outcome: Outcome,
    ) -> None:
        """Stage every effect of one message into the open batch, synchronously (no await), so
        they all land in the same transaction."""
        batch, conversation = self.batch, entry.conversation
        key = (event.channel_id, event.event_id)
        now = time.time()
        inbound_id = str(stable_id(event.channel_id, event.event_id, "in"))
        payload = _payload(event)
        if outcome.errors:  # e.g. a flow stopped by the step bound: kept with the message that caused it
            payload["errors"] = outcome.errors
        batch.events[key] = conversation.id
        batch.history.append((key, HistoryRow(
            inbound_id, event.tenant_id, event.channel_id, conversation.id, "inbound", event.contact_key,
            event.type.value, event.text, payload, event.event_id, utc(now),
        )))  # fmt: skip
        replies = [
            OutboundMessage(
                id=str(stable_id(event.channel_id, event.event_id, "reply", i)),
                created_at=now + (i + 1) * 1e-6,  # after the inbound row, in reply order
                tenant_id=event.tenant_id,
                channel_id=event.channel_id,
                channel_type=event.channel_type,
                conversation_id=conversation.id,
                conversation_key=event.conversation_key,
                text=reply.text,
                buttons=reply.buttons,
                reply_to=event.reply_to,
            )
            for i, reply in enumerate(outcome.replies)
        ]
        if event.type is MessageType.BUTTON and "callback_query_id" in event.reply_to:
            replies.insert(0, _answer_callback(event, conversation.id, now))
        for reply in replies:
            history_id = None
            if reply.kind == "message":
                history_id = str(stable_id(reply.id, "history"))
                batch.history.append((key, HistoryRow(
                    history_id, reply.tenant_id, reply.channel_id, conversation.id, "outbound", "bot",
                    "text", reply.text, {"buttons": [b.id for b in reply.buttons]}, None,
                    utc(reply.created_at),
                )))  # fmt: skip
            batch.outbound.append((key, reply, history_id))
        for tool_run in outcome.tool_runs:
            batch.tool_runs.append((key, event.tenant_id, conversation.id, tool_run))
        for error in outcome.errors:
            log.warning("conversation %s: %s", conversation.id, error)
        batch.stage_state(conversation, entry.contact, utc(now))
        conversation.is_new = False
        entry.remember(event.event_id)
        entry.pending += 1
        batch.messages += 1
        self._stage_ack(shard, message, entry)

    def _stage_ack(self, shard: int, message: AbstractIncomingMessage, entry: Entry | None = None) -> None:
        self.batch.acks.append((shard, message, entry))
        self.batch_ready.set()
        if len(self.batch) >= self.settings.batch_size:
            self.batch_full.set()

    async def _retry_or_dead_letter(self, shard: int, message: AbstractIncomingMessage, reason: str) -> None:
        attempts = int(str((message.headers or {}).get(ATTEMPT_HEADER) or 0)) + 1
        if attempts >= MAX_ATTEMPTS:
            await self._dead_letter(shard, message, reason, "handler")
            return
        copy = bus.copy_of(message, {**(message.headers or {}), ATTEMPT_HEADER: attempts})
        await self.channel.default_exchange.publish(copy, routing_key=self.topology.retry_queue(shard))
        metrics.RETRIES.inc()
        self._stage_ack(shard, message)

    async def _dead_letter(self, shard: int, message: AbstractIncomingMessage, reason: str, kind: str) -> None:
        """Set a poison message aside with its reason and origin (`engine dead-letters` lists and
        replays them); the shard keeps flowing."""
        log.error("dead-lettering message %s: %s", message.message_id, reason)
        headers = {**(message.headers or {}), "x-reason": reason[:500], "x-queue": self.topology.inbound_queue(shard)}
        copy = bus.copy_of(message, headers)
        dlx = await self.channel.get_exchange(self.topology.dlx, ensure=False)
        await dlx.publish(copy, routing_key="")
        metrics.DEAD_LETTERS.labels(kind).inc()
        self._stage_ack(shard, message)

    # --- batching -----------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        # A batch is flushed flush_interval_ms after it was opened (or at batch_size). Under load
        # the next batch fills while the previous one commits, so it is flushed as soon as that
        # ends: batches grow with the load and latency stays about one commit.
        interval = self.settings.flush_interval_ms / 1000
        while True:
            await self.batch_ready.wait()
            remaining = self.batch.started + interval - time.monotonic()
            if remaining > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.batch_full.wait(), remaining)
            await self.flush()

    async def flush(self) -> None:
        """Commit the open batch, publish its replies, ack its messages. Serialised, so batches
        commit in the order they were staged (and each conversation's rows in order)."""
        async with self.flush_lock:
            batch, self.batch = self.batch, Batch()
            self.batch_ready.clear()
            self.batch_full.clear()
            if not len(batch):
                return
            started = time.perf_counter()
            duplicates = await self._commit(batch)
            if duplicates:
                metrics.DUPLICATES.labels("ledger").inc(len(duplicates))
                for key in duplicates:
                    self.state.evict(batch.events[key])  # its in-memory state took a duplicate
            await self._publish_replies([m for key, m, _ in batch.outbound if key not in duplicates])
            for shard, message, entry in batch.acks:
                await message.ack()
                self.subs.done(shard)
                if entry is not None:
                    entry.pending -= 1
            self.state.trim()
            metrics.FLUSH_SECONDS.observe(time.perf_counter() - started)
            metrics.FLUSH_SIZE.observe(batch.messages)
            metrics.MESSAGES_PROCESSED.inc(batch.messages - len(duplicates))
            metrics.LANES.set(len(self.lanes))

    async def _commit(self, batch: Batch) -> set[tuple[str, str]]:
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
                    duplicates = await store.flush(conn, batch)
        return duplicates

    async def _publish_replies(self, replies: list[OutboundMessage]) -> None:
        """Publish with confirms. If the broker fails us here the rows are committed as 'queued',
        and the sender's sweeper re-publishes stale queued rows, so the reply is late, not lost."""
        publishes = []
        for reply in replies:
            message = bus.make_message(reply, message_id=reply.id, correlation_id=reply.conversation_id)
            publishes.append(
                self.outbound.publish(message, routing_key=self.topology.outbound_key(reply), mandatory=True)
            )
        results = await asyncio.gather(*publishes, return_exceptions=True)
        if failed := [r for r in results if isinstance(r, BaseException)]:
            log.error("%d replies not confirmed by the broker (%r); the sweeper will resend", len(failed), failed[0])

    # --- shutdown -----------------------------------------------------------------------------

    async def _shutdown(self, tasks: list[asyncio.Task[Any]]) -> None:
        """Stop taking work, finish what is in flight, flush and ack, then close in reverse order."""
        tasks[0].cancel()  # membership: no more shard changes
        await self.subs.stop()
        if not await self.lanes.drain(self.settings.shutdown_grace):
            log.warning("grace period over: unfinished messages go back to the broker")
            await self.lanes.cancel()
        async with self.flush_lock:  # never cancel the flusher in the middle of a flush
            tasks[1].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self.flush()
        except Exception:  # the broker will redeliver whatever we could not commit and ack
            log.exception("final flush failed")
        with contextlib.suppress(Exception):
            await self.membership.leave()
        await self.channel.close()
        await self.connection.close()
        await self.brain.stop()
        await self.http.close()
        await self.pool.close()
        log.info("worker %s stopped", self.membership.me)


def _payload(event: InboundEvent) -> dict[str, Any]:
    payload: dict[str, Any] = {"raw": event.raw}
    if event.payload is not None:
        payload["payload"] = event.payload
    if event.media is not None:
        payload["media"] = event.media
    return payload


def _answer_callback(event: InboundEvent, conversation_id: str, now: float) -> OutboundMessage:
    return OutboundMessage(
        id=str(stable_id(event.channel_id, event.event_id, "answer_callback")),
        created_at=now,
        tenant_id=event.tenant_id,
        channel_id=event.channel_id,
        channel_type=event.channel_type,
        conversation_id=conversation_id,
        conversation_key=event.conversation_key,
        text="",
        reply_to=event.reply_to,
        kind="answer_callback",
    )


def main(settings: Settings) -> None:

    run(Worker(settings).run, settings)
