"""`engine sender`: consume the outbound queues it owns (one per platform and shard) and deliver each
reply through its platform's API.

Per chat, replies go out one after another in order (a lane per conversation); across chats and
platforms sends run concurrently, so a slow or rate-limited platform holds up only its own chats.
Each send: claim the channel_messages row (queued -> sending, once), wait for the rate limiter,
call the platform with retries for what is retryable, record sent (with the platform id) or failed.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import asyncpg
from aio_pika.abc import AbstractIncomingMessage

from engine import bus, channels, envelope, metrics
from engine.batch import utc
from engine.crypto import Vault
from engine.lanes import Lanes
from engine.models import OutboundMessage, SendError
from engine.ratelimit import RateLimiter, limits_for
from engine.retry import send_policy
from engine.settings import Settings
from engine.shards import Membership, ShardSubscriptions
from engine.store import deliveries
from engine.store.channels import ChannelDirectory
from engine.store.pool import create_pool
from workers.runtime import run, until_stop_or_failure

log = logging.getLogger(__name__)


class Sender:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topology = bus.Topology(settings.topology_prefix, settings.shards)
        self.lanes = Lanes()

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        self.pool = await create_pool(s.database_url, max_size=10)
        self.directory = ChannelDirectory(self.pool, Vault(s.master_key), s.channel_cache_ttl)
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=s.send_timeout))
        self.limiter = RateLimiter()
        membership = Membership(self.pool, "sender", s.lease_ttl)
        self.connection = await bus.connect(s.amqp_url, membership.me)
        self.channel = await bus.open_channel(self.connection, prefetch=s.sender_prefetch)
        await bus.declare_topology(self.channel, self.topology)
        self.outbound = await self.channel.get_exchange(self.topology.outbound)
        self.subs = ShardSubscriptions(
            self.channel,
            membership,
            self.topology.outbound_slots,
            self.topology.outbound_queue,
            self._on_message,
            self._released,
        )
        tasks = [
            asyncio.create_task(self.subs.follow(s.heartbeat_interval), name="membership"),
            asyncio.create_task(self._sweep_loop(), name="sweeper"),
        ]
        log.info("sender %s started", membership.me)
        died = await until_stop_or_failure(stop, tasks)
        for task in tasks:
            task.cancel()
        await self.subs.stop()
        if not await self.lanes.drain(s.shutdown_grace):
            log.warning("grace period over: unsent replies go back to the broker")
            await self.lanes.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await membership.leave()
        await self.channel.close()
        await self.connection.close()
        await self.http.close()
        await self.pool.close()
        log.info("sender %s stopped", membership.me)
        if died:
            raise SystemExit(1)

    async def _released(self, shard: int) -> None:
        if not await self.subs.wait_idle(shard, self.settings.shutdown_grace):
            log.warning("shard %d handed over with sends in flight; their messages go back to the broker", shard)

    def _on_message(self, shard: int, message: AbstractIncomingMessage) -> None:
        try:
            item = envelope.decode(message.body)
            if not isinstance(item, OutboundMessage):
                raise envelope.EnvelopeError("not an outbound envelope")
        except envelope.EnvelopeError as exc:
            log.error("rejecting outbound message %s: %s", message.message_id, exc)
            self.lanes.submit(("reject", message.message_id), lambda: self._finish(shard, message, dead=True))
            return
        self.lanes.submit((item.channel_id, item.conversation_key), lambda: self._deliver(shard, message, item))

    async def _finish(self, shard: int, message: AbstractIncomingMessage, *, dead: bool = False) -> None:
        if dead:
            await message.reject(requeue=False)  # the shard queue dead-letters it to {p}.dead
        else:
            await message.ack()
        self.subs.done(shard)

    async def _deliver(self, shard: int, message: AbstractIncomingMessage, reply: OutboundMessage) -> None:
        try:
            await self._send(shard, message, reply)
        except Exception:  # the database is unreachable, or a bug: hand the message back
            log.exception("delivering %s failed; requeueing", reply.id)
            await asyncio.sleep(1.0)
            await message.nack(requeue=True)
            self.subs.done(shard)

    async def _send(self, shard: int, message: AbstractIncomingMessage, reply: OutboundMessage) -> None:
        created = utc(reply.created_at)
        if not await deliveries.claim(self.pool, reply.id, created):
            metrics.SENDS.labels(reply.channel_type.value, "duplicate").inc()
            await self._finish(shard, message)  # sent already, or being sent by a previous copy
            return
        channel = await self.directory.get(reply.channel_id)
        if channel is None or not channel.active:
            await deliveries.mark_failed(self.pool, reply.id, created, "channel", "channel missing or inactive")
            await self._finish(shard, message)
            return
        impl = channels.get(reply.channel_type)
        base_url = self.settings.api_base(reply.channel_type)
        chat = RateLimiter.chat_of(reply)
        limits = limits_for(reply.channel_type, self.settings)
        outcome = "sent"
        try:
            async for attempt in send_policy(self.settings.send_attempts):
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        await deliveries.touch(self.pool, reply.id, created)  # still ours: not stale
                    if reply.kind == "message":  # acknowledging a button press is not a chat message
                        await self.limiter.acquire_send(reply.channel_id, chat, limits)
                    started = time.perf_counter()
                    try:
                        result = await impl.send(self.http, base_url, channel, reply)
                    except SendError as exc:
                        self.limiter.block_after(reply.channel_id, chat, exc)
                        raise
                    finally:
                        metrics.SEND_SECONDS.labels(reply.channel_type.value).observe(time.perf_counter() - started)
            await deliveries.mark_sent(self.pool, reply.id, created, result.platform_message_id)
        except SendError as exc:
            outcome = "failed"
            log.warning("send %s failed for good: code=%s %s", reply.id, exc.code, exc)
            await deliveries.mark_failed(self.pool, reply.id, created, exc.code, str(exc))
        metrics.SENDS.labels(reply.channel_type.value, outcome).inc()
        await self._finish(shard, message)

    async def _sweep_loop(self) -> None:
        """Re-publish replies whose broker message was lost; claims make a resend harmless."""
        interval = max(self.settings.requeue_stale_after / 4, 1.0)
        while True:
            await asyncio.sleep(interval)
            try:
                bodies = await deliveries.sweep_stale(self.pool, self.settings.requeue_stale_after)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("sweep skipped: database unavailable (%s)", type(exc).__name__)
                continue
            for body in bodies:
                reply = envelope.decode(envelope.encode_raw("outbound", body))
                assert isinstance(reply, OutboundMessage)
                msg = bus.make_message(reply, message_id=reply.id, correlation_id=reply.conversation_id)
                await self.outbound.publish(msg, routing_key=self.topology.outbound_key(reply))
            if bodies:
                log.warning("re-published %d stale replies", len(bodies))


def main(settings: Settings) -> None:
    run(Sender(settings).run, settings)
