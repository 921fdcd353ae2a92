"""The one consumer every process uses: it consumes the shards this member owns, follows ownership
as members come and go, and owns how each delivery is settled.

    handler(delivery)      called for every message; the handler settles it exactly once:
    ack(d) / ack_many(ds)  done with it (the worker: only after its batch committed)
    requeue(d)             hand it back in its place (a dependency is down; nothing was done)
    retry(d, reason)       through the shard's retry queue with the attempt header, and to the
                           dead letters once the attempts are spent
    dead_letter(d, reason) set aside with its reason and origin queue; the shard keeps flowing
    parts(d, items, encode) a message that carries several items: one delivery per item, settled
                           each on its own (a part retried or set aside goes alone, with its own
                           body); the message is acked once its last part is

Every settlement also closes the delivery's in-flight count, so a shard is handed to the next owner
only once nothing taken from it is unsettled (the hand-over order in engine.bus.shards).

Queues are declared through the robust channel (same arguments as the topology), so after a broker
restart aio-pika re-declares them and restores their consumers by itself. A settlement that fails
because the channel died is not an error: the broker requeues everything unacked of a dead channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError

from engine import metrics
from engine.bus.connection import copy_of
from engine.bus.shards import Membership, assign
from engine.bus.topology import ShardQueues
from engine.store.pool import TRANSIENT_ERRORS

T = TypeVar("T")

log = logging.getLogger(__name__)

ATTEMPT_HEADER = "x-attempts"
REASON_HEADER = "x-reason"
ORIGIN_HEADER = "x-queue"
MAX_ATTEMPTS = 3  # a message whose handling raises is tried this many times, then dead-lettered
# What a settlement on a channel that died raises; the broker has requeued the message already.
CHANNEL_GONE = (AMQPError, ChannelInvalidStateError, OSError, RuntimeError)


@dataclass(slots=True, eq=False)
class Delivery:
    """One message taken from a shard queue (or one part of it), to be settled exactly once through
    its consumer."""

    shard: int
    message: AbstractIncomingMessage
    settled: bool = False
    channel: Any = None  # the AMQP channel it came on: delivery tags are numbered per channel
    parcel: Parcel | None = None  # a part: the message it is one item of
    own_body: Callable[[], bytes] | None = None  # a part's body alone, to retry or set aside

    @property
    def attempts(self) -> int:
        """How many times handling this message has failed before (0 for a first delivery)."""
        return int(str((self.message.headers or {}).get(ATTEMPT_HEADER) or 0))

    @property
    def body(self) -> bytes:
        return self.own_body() if self.own_body is not None else self.message.body


@dataclass(slots=True, eq=False)
class Parcel:
    """A message carrying several items: acked once the last of its parts is settled."""

    whole: Delivery
    left: int


def _unbound(delivery: Delivery) -> None:
    raise RuntimeError("a delivery before follow() was called")


async def _nothing_held(shard: int) -> None:
    return None


class ShardConsumer:
    def __init__(
        self,
        channel: AbstractRobustChannel,
        membership: Membership,
        queues: ShardQueues,
        *,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.channel = channel
        self.membership = membership
        self.queues = queues
        self.handler: Callable[[Delivery], None] = _unbound
        self.on_release: Callable[[int], Awaitable[None]] = _nothing_held
        self.max_attempts = max_attempts
        self.consumers: dict[int, tuple[AbstractQueue, str]] = {}
        self.in_flight: dict[int, int] = {}
        self._idle: dict[int, asyncio.Event] = {}
        self.unowned: set[int] = set()  # shards released whose shard_owners row is still ours
        # Per AMQP channel, the delivery tags the broker still holds for us: a multiple-ack may cover
        # only tags below all of them. A tag leaves only once its ack/nack went out.
        self._open_tags: dict[Any, set[int]] = {}

    def queue_name(self, shard: int) -> str:
        return self.queues.queues[shard].name

    # --- settling -----------------------------------------------------------------------------

    def parts(self, delivery: Delivery, items: Sequence[T], encode: Callable[[T], bytes]) -> list[tuple[Delivery, T]]:
        """Each item of a message with its own delivery (a message of one item is its own only part);
        encode(item) is a part's body alone, made only if the part is retried or set aside."""
        if len(items) == 1:
            return [(delivery, items[0])]
        parcel = Parcel(delivery, len(items))
        return [
            (Delivery(delivery.shard, delivery.message, channel=delivery.channel, parcel=parcel,
                      own_body=partial(encode, item)), item)
            for item in items
        ]  # fmt: skip

    def _part_done(self, part: Delivery) -> bool:
        """Settle a part; True once it was the last of its message's."""
        if part.settled:
            raise RuntimeError(f"part of delivery {part.message.delivery_tag} settled twice")
        part.settled = True
        assert part.parcel is not None
        part.parcel.left -= 1
        return part.parcel.left == 0

    def _settled(self, delivery: Delivery) -> None:
        if delivery.parcel is not None:  # a part whose settling failed: so does its message's
            if self._part_done(delivery):
                self._settled(delivery.parcel.whole)
            return
        if delivery.settled:
            raise RuntimeError(f"delivery {delivery.message.delivery_tag} settled twice")
        delivery.settled = True
        shard = delivery.shard
        self.in_flight[shard] -= 1
        if self.in_flight[shard] == 0:
            self._idle[shard].set()

    async def _settle(self, delivery: Delivery, action: Callable[[], Awaitable[None]]) -> None:
        self._settled(delivery)
        try:
            await action()
        except CHANNEL_GONE as exc:  # the broker requeued it with its dead channel: it comes back
            log.warning("settling message %s failed (%r); the broker redelivers it", delivery.message.message_id, exc)
            return
        self._open_tags.get(delivery.channel, set()).discard(delivery.message.delivery_tag or 0)

    async def ack(self, delivery: Delivery) -> None:
        if delivery.parcel is not None:
            if self._part_done(delivery):
                await self.ack(delivery.parcel.whole)
            return
        await self._settle(delivery, delivery.message.ack)

    async def ack_many(self, deliveries: list[Delivery]) -> None:
        """Ack them all: per channel, one multiple-ack for those below every tag the broker still holds
        for us (in flight elsewhere, or settling), and one ack each for the rest."""
        groups: dict[Any, list[Delivery]] = {}
        for delivery in deliveries:
            if delivery.parcel is not None:  # a part: its message goes once its last part does
                if not self._part_done(delivery):
                    continue
                delivery = delivery.parcel.whole
            groups.setdefault(delivery.channel, []).append(delivery)
        for channel, group in groups.items():
            open_tags = self._open_tags.get(channel, set())
            mine = {d.message.delivery_tag or 0 for d in group}
            floor = min(open_tags - mine, default=None)
            below = [d for d in group if floor is None or (d.message.delivery_tag or 0) < floor]
            if len(below) > 1:
                top = max(below, key=lambda d: d.message.delivery_tag or 0)
                for delivery in below:
                    self._settled(delivery)
                try:
                    await top.message.ack(multiple=True)
                except CHANNEL_GONE as exc:
                    log.warning("acking %d messages failed (%s); the broker redelivers them", len(below), exc)
                else:
                    open_tags.difference_update(d.message.delivery_tag or 0 for d in below)
                rest = [d for d in group if floor is not None and (d.message.delivery_tag or 0) > floor]
            else:
                rest = group
            for delivery in rest:
                await self.ack(delivery)
        for channel in [c for c in self._open_tags if c is not None and c.is_closed]:
            del self._open_tags[channel]  # a dead channel's tags are void (the broker requeued them)

    async def requeue(self, delivery: Delivery) -> None:
        """Hand the message back untouched: nothing it caused was done (e.g. the database is away)."""
        if delivery.parcel is not None:
            raise ValueError("a part of a message cannot be handed back alone")
        await self._settle(delivery, lambda: delivery.message.nack(requeue=True))

    async def retry(self, delivery: Delivery, reason: str) -> None:
        """Handling raised: try again later through the shard's retry queue, or set it aside once
        the attempts are spent (a family without retry queues dead-letters at once)."""
        attempts = delivery.attempts + 1
        retry_queues = self.queues.retry_queues
        if retry_queues is None or attempts >= self.max_attempts:
            await self.dead_letter(delivery, reason, "handler")
            return
        message = delivery.message
        copy = copy_of(message, {**(message.headers or {}), ATTEMPT_HEADER: attempts}, delivery.body)
        try:
            await self.channel.default_exchange.publish(copy, routing_key=retry_queues[delivery.shard])
        except CHANNEL_GONE:  # not retried yet: leave it unacked, the broker gives it back
            self._settled(delivery)
            return
        metrics.RETRIES.inc()
        await self.ack(delivery)

    async def dead_letter(self, delivery: Delivery, reason: str, kind: str) -> None:
        """Set a poison message (or part) aside with its reason and origin queue (`engine dead-letters`
        lists and replays them) and ack it; the shard keeps flowing."""
        message = delivery.message
        log.error("dead-lettering message %s: %s", message.message_id, reason)
        headers = {
            **(message.headers or {}),
            REASON_HEADER: reason[:500],
            ORIGIN_HEADER: self.queue_name(delivery.shard),
        }
        try:
            dlx = await self.channel.get_exchange(self.queues.dlx, ensure=False)
            await dlx.publish(copy_of(message, headers, delivery.body), routing_key="")
        except CHANNEL_GONE:
            self._settled(delivery)
            return
        metrics.DEAD_LETTERS.labels(kind).inc()
        await self.ack(delivery)

    # --- shard ownership ----------------------------------------------------------------------

    async def wait_idle(self, shard: int, grace: float) -> bool:
        """Wait until nothing of the shard is in flight; False if the grace period ran out."""
        if not self.in_flight.get(shard):
            return True
        try:
            async with asyncio.timeout(grace):
                await self._idle[shard].wait()
        except TimeoutError:
            return False
        return True

    async def follow(
        self, handler: Callable[[Delivery], None], on_release: Callable[[int], Awaitable[None]], interval: float
    ) -> None:
        """Consume the shards we own, heartbeat and rebalance forever (run it as a task; cancel it to
        stop rebalancing). handler(delivery) gets every message; on_release(shard) must return once
        what the process holds of a shard that moves away is settled."""
        self.handler, self.on_release = handler, on_release
        while True:
            try:
                await self._rebalance()
            except TRANSIENT_ERRORS as exc:
                # Keep consuming what we have: nobody else can claim it while our lease holds, and
                # single-active-consumer keeps one consumer per shard if it lapses.
                log.warning("rebalancing skipped (%s); keeping current shards", type(exc).__name__)
            metrics.OWNED_SHARDS.labels(self.membership.role).set(len(self.consumers))
            await asyncio.sleep(interval)

    async def _rebalance(self) -> None:
        members = await self.membership.heartbeat()
        for shard in sorted(self.unowned):  # released earlier, but giving up the row failed
            await self.membership.disown(shard)
            self.unowned.discard(shard)
        wanted = assign(self.queues.count, members, self.membership.me)
        for shard in sorted(self.consumers.keys() - wanted):
            await self.release(shard)
        # Claiming renews the rows we hold and takes the free ones. A row we consume but no longer
        # hold was taken while we could not heartbeat (a long database outage): let it go.
        held = await self.membership.claim(wanted) if wanted else set()
        for shard in sorted(self.consumers.keys() - held):
            log.warning("%s lost shard %d while away; releasing it", self.membership.me, shard)
            await self.release(shard, owned=False)
        for shard in sorted(held - self.consumers.keys()):
            await self._consume(shard)

    async def _consume(self, shard: int) -> None:
        spec = self.queues.queues[shard]
        queue = await self.channel.declare_queue(spec.name, durable=True, arguments=spec.arguments, robust=True)

        async def deliver(message: AbstractIncomingMessage) -> None:
            self.in_flight[shard] = self.in_flight.get(shard, 0) + 1
            self._idle.setdefault(shard, asyncio.Event()).clear()
            channel = message.channel
            self._open_tags.setdefault(channel, set()).add(message.delivery_tag or 0)
            self.handler(Delivery(shard, message, channel=channel))

        self.in_flight.setdefault(shard, 0)
        self.consumers[shard] = (queue, await queue.consume(deliver))
        log.info("%s consuming %s", self.membership.me, spec.name)

    async def release(self, shard: int, *, owned: bool = True) -> None:
        """Stop consuming a shard, let the owner finish and ack what it holds of it, then give it up."""
        queue, tag = self.consumers.pop(shard)
        with contextlib.suppress(*CHANNEL_GONE):  # a dead channel delivers nothing more anyway
            await queue.cancel(tag)
        await self.on_release(shard)
        if not owned:
            return
        self.unowned.add(shard)
        await self.membership.disown(shard)
        self.unowned.discard(shard)
        log.info("%s released %s", self.membership.me, self.queue_name(shard))

    async def stop(self) -> None:
        """Stop taking new messages from every shard (what is held stays to be finished)."""
        for queue, tag in list(self.consumers.values()):
            with contextlib.suppress(Exception):  # a closed channel already stopped delivering
                await queue.cancel(tag)
        self.consumers.clear()
