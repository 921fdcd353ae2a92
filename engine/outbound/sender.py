"""The sender: deliver each reply from the outbound queues through its platform's API.

Per chat, replies go out one after another in order (a lane per conversation); across chats and
platforms sends run concurrently, so a slow or rate-limited platform holds up only its own chats.
Each send: claim the channel_messages row (queued -> sending, once) unless the worker's commit
already did (first_copy), wait for the rate limiter, call the platform with retries for what is
retryable, record sent (with the platform id) or failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from functools import partial

import aiohttp
import asyncpg
from aio_pika.abc import AbstractExchange

from engine import channels, metrics
from engine.bus import envelope
from engine.bus.connection import is_first_copy, replies_message
from engine.bus.consumer import CHANNEL_GONE, Delivery, ShardConsumer
from engine.bus.lanes import Lanes
from engine.bus.topology import Topology
from engine.coalescer import Coalescer
from engine.models import ChannelType, OutboundMessage, SendError, SendResult
from engine.outbound.ratelimit import RateLimiter, limits_for
from engine.outbound.retry import with_retries
from engine.recovery import hooks as recovery
from engine.settings import Settings
from engine.store import deliveries
from engine.store.channels import ChannelDirectory
from engine.store.pool import TRANSIENT_ERRORS, when_available
from engine.values import utc

log = logging.getLogger(__name__)


class Sender:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        keyed: asyncpg.Pool,
        http: aiohttp.ClientSession,
        directory: ChannelDirectory,
        consumer: ShardConsumer,
        outbound: AbstractExchange,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.http = http
        self.directory = directory
        self.consumer = consumer
        self.outbound = outbound
        self.topology = Topology.of(settings)
        self.limiter = RateLimiter()
        self.limits = {t: limits_for(t, settings) for t in ChannelType}
        self.lanes = Lanes()
        # Lanes claim and record one reply at a time; these join them into one statement per few ms, on
        # the pool of keyed plans (planned once per connection: store.pool.KEYED_PLANS).
        self.claim: Coalescer[tuple[str, datetime], bool] = Coalescer(lambda rows: deliveries.claim_many(keyed, rows))
        self.record_sent: Coalescer[tuple[str, datetime, str | None], None] = Coalescer(
            lambda rows: deliveries.mark_sent_many(keyed, rows)
        )

    async def release_shard(self, shard: int) -> None:
        if not await self.consumer.wait_idle(shard, self.settings.shutdown_grace):
            log.warning("shard %d handed over with sends in flight; their messages go back to the broker", shard)

    def on_delivery(self, delivery: Delivery) -> None:
        try:
            replies = envelope.decode_replies(delivery.message.body)
        except envelope.EnvelopeError as exc:
            reason = str(exc)
            tag = delivery.message.delivery_tag
            self.lanes.submit(("dead", tag), lambda: self.consumer.dead_letter(delivery, reason, "decode"))
            return
        if not replies:
            self.lanes.submit(("empty", delivery.message.delivery_tag), lambda: self.consumer.ack(delivery))
            return
        # A message may carry several replies (a worker's flush): each goes to its chat's lane as a
        # part of the message, which is acked once the last of them is done.
        for part, reply in self.consumer.parts(delivery, replies, envelope.encode):
            self.lanes.submit((reply.channel_id, reply.conversation_key), partial(self._deliver, part, reply))

    async def _deliver(self, delivery: Delivery, reply: OutboundMessage) -> None:
        try:
            await self._send(reply, self._first_copy(delivery, reply))
        except Exception as exc:  # a bug: set the reply aside (alone) with the reason rather than loop on it
            log.exception("delivering %s failed", reply.id)
            await self.consumer.retry(delivery, repr(exc))
            return
        await self.consumer.ack(delivery)

    def _first_copy(self, delivery: Delivery, reply: OutboundMessage) -> bool:
        """Whether no other copy of this reply can be on its way: the worker's commit is then its claim.

        The worker publishes each reply once, after the commit that created its row (is_first_copy). A
        second copy comes from the broker (redelivered), a retry or a replay (copies: not first), or the
        sweeper, which re-publishes a row only once it is requeue_stale_after old, and so only after the
        first copy would have been. A copy older than a quarter of that is claimed, which leaves the send
        the other three quarters (retries touch the row). A redelivered copy that reaches this process
        while the first is still being sent here waits behind it in the chat's lane."""
        age = time.time() - utc(reply.created_at).timestamp()
        return is_first_copy(delivery.message) and age < self.settings.requeue_stale_after / 4

    async def _send(self, reply: OutboundMessage, first_copy: bool) -> None:
        """Claim (unless first_copy), rate-limit, send with retries, record. Returns once the outcome is
        recorded (or the reply was claimed before: sent already, or being sent by a previous copy).

        While the database is away each step waits for it in the chat's lane (when_available), so the
        chat's later replies queue behind this one instead of overtaking it."""
        created = utc(reply.created_at)
        metrics.labelled(metrics.CLAIMS, "commit" if first_copy else "sender").inc()
        if not first_copy and not await when_available(lambda: self.claim((reply.id, created))):
            metrics.labelled(metrics.SENDS, reply.channel_type.value, "duplicate").inc()
            return
        channel = await when_available(lambda: self.directory.get(reply.channel_id))
        if channel is None or not channel.active:
            await when_available(
                lambda: deliveries.mark_failed(self.pool, reply.id, created, "channel", "channel missing or inactive")
            )
            return
        impl = channels.get(reply.channel_type)
        base_url = self.settings.api_base(reply.channel_type)
        chat = RateLimiter.chat_of(reply)
        limits = self.limits[reply.channel_type]

        async def attempt(retrying: bool) -> SendResult:
            if retrying:
                await when_available(lambda: deliveries.touch(self.pool, reply.id, created))  # not stale
            if reply.kind == "message":  # acknowledging a button press is not a chat message
                await self.limiter.acquire_send(reply.channel_id, chat, limits)
            started = time.perf_counter()
            try:
                return await impl.send(self.http, base_url, channel, reply)
            except SendError as exc:
                self.limiter.block_after(reply.channel_id, chat, exc)
                raise
            finally:
                metrics.labelled(metrics.SEND_SECONDS, reply.channel_type.value).observe(time.perf_counter() - started)

        outcome = "sent"
        try:
            result = await with_retries(attempt, self.settings.send_attempts)
            platform_id = result.platform_message_id
            await when_available(lambda: self.record_sent((reply.id, created, platform_id)))
            await when_available(lambda: recovery.after_send(self.pool, self.settings, reply, None, None))
        except SendError as exc:
            outcome = "failed"
            log.warning("send %s failed for good: code=%s %s", reply.id, exc.code, exc)
            code, error = exc.code, str(exc)
            await when_available(lambda: deliveries.mark_failed(self.pool, reply.id, created, code, error))
            await when_available(lambda: recovery.after_send(self.pool, self.settings, reply, code, error))
        metrics.labelled(metrics.SENDS, reply.channel_type.value, outcome).inc()

    async def sweep_loop(self) -> None:
        """Re-publish replies whose broker message was lost; claims make a resend harmless."""
        interval = max(self.settings.requeue_stale_after / 4, 1.0)
        while True:
            await asyncio.sleep(interval)
            try:
                bodies = await deliveries.sweep_stale(self.pool, self.settings.requeue_stale_after)
            except TRANSIENT_ERRORS as exc:
                log.warning("sweep skipped: database unavailable (%s)", type(exc).__name__)
                continue
            replies = [envelope.reply_from(body) for body in bodies]
            for key, group in self.topology.group_replies(replies):
                try:
                    async with asyncio.timeout(self.settings.publish_timeout):
                        await self.outbound.publish(replies_message(group), routing_key=key)
                except CHANNEL_GONE as exc:  # the broker is away: the rows stay queued for the next sweep
                    log.warning("sweep stopped: broker unavailable (%s)", type(exc).__name__)
                    break
            if bodies:
                log.warning("re-published %d stale replies", len(bodies))
