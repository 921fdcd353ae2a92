"""RabbitMQ topology as data, declared (and deleted) by walking it.

    {p}.inbound   direct  --"k"-->  {p}.inbound.k    (k < shards; single active consumer)
    {p}.outbound  direct  --"t.k"-->  {p}.outbound.t.k   (t = channel type, k = the conversation's shard)
    {p}.dlx       fanout  -------->  {p}.dead         (poison messages, with the reason)
    {p}.inbound.k.retry   (TTL, dead-letters back to {p}.inbound.k through the default exchange)

A conversation always hashes to the same shard k, and single-active-consumer lets exactly one
process consume a shard at a time: that is what keeps each conversation in order. Outbound queues are
also split by channel type, so that replies waiting on a slow or rate-limited platform fill only
their own consumers' prefetch, never another platform's.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractRobustChannel, AbstractRobustConnection

from engine.bus.connection import connect, open_channel
from engine.models import ChannelType, OutboundMessage
from engine.settings import Settings

RETRY_DELAY_MS = 2_000
SAC = {"x-single-active-consumer": True}
OUTBOUND_TYPES = tuple(ChannelType)

# The replies of one worker flush for one outbound queue travel in one broker message (a hop per
# batch, not per reply); the cap bounds what a sender has redelivered after a crash.
REPLIES_PER_MESSAGE = 100


@dataclass(frozen=True, slots=True)
class Exchange:
    name: str
    type: aio_pika.ExchangeType


@dataclass(frozen=True, slots=True)
class Queue:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class Binding:
    queue: str
    exchange: str
    routing_key: str


@dataclass(frozen=True, slots=True)
class ShardQueues:
    """One family of sharded work queues, as a consumer needs it: the queue of each shard (declared
    again, same arguments, so the robust channel restores its consumer after a reconnect), the
    shard's retry queue if the family has one, and where dead letters go."""

    count: int
    queues: tuple[Queue, ...]
    retry_queues: tuple[str, ...] | None
    dlx: str


@dataclass(frozen=True, slots=True)
class Topology:
    prefix: str
    shards: int
    queue_type: str = "classic"  # or "quorum": replicated, for a cluster of brokers

    @classmethod
    def of(cls, settings: Settings) -> Topology:
        return cls(settings.topology_prefix, settings.shards, settings.queue_type)

    @property
    def _type(self) -> dict[str, Any]:
        # Classic stays implicit, so queues declared before this setting existed still match.
        return {} if self.queue_type == "classic" else {"x-queue-type": self.queue_type}

    @property
    def inbound(self) -> str:
        return f"{self.prefix}.inbound"

    @property
    def outbound(self) -> str:
        return f"{self.prefix}.outbound"

    @property
    def dlx(self) -> str:
        return f"{self.prefix}.dlx"

    @property
    def dead(self) -> str:
        return f"{self.prefix}.dead"

    def inbound_queue(self, shard: int) -> str:
        return f"{self.inbound}.{shard}"

    def retry_queue(self, shard: int) -> str:
        return f"{self.inbound}.{shard}.retry"

    @property
    def outbound_slots(self) -> int:
        """Outbound queues in all: one per channel type and shard, numbered type-major."""
        return len(OUTBOUND_TYPES) * self.shards

    def _outbound_slot_key(self, slot: int) -> str:
        return f"{OUTBOUND_TYPES[slot // self.shards].value}.{slot % self.shards}"

    def outbound_queue(self, slot: int) -> str:
        return f"{self.outbound}.{self._outbound_slot_key(slot)}"

    def outbound_key(self, message: OutboundMessage) -> str:
        """The routing key of a reply: its platform and its conversation's shard."""
        shard = self.shard_of(message.tenant_id, message.channel_id, message.conversation_key)
        return f"{message.channel_type.value}.{shard}"

    def group_replies(
        self, replies: list[OutboundMessage], most: int = REPLIES_PER_MESSAGE
    ) -> list[tuple[str, list[OutboundMessage]]]:
        """Replies grouped by outbound queue (routing key) and tenant, in order, at most `most` to a
        group: what one broker message each carries (one tenant's only, so a dead letter is too)."""
        open_groups: dict[tuple[str, str], list[OutboundMessage]] = {}
        groups: list[tuple[str, list[OutboundMessage]]] = []
        for reply in replies:
            key = self.outbound_key(reply)
            group = open_groups.get((key, reply.tenant_id))
            if group is None or len(group) >= most:
                group = open_groups[key, reply.tenant_id] = []
                groups.append((key, group))
            group.append(reply)
        return groups

    def shard_of(self, tenant_id: str, channel_id: str, conversation_key: str) -> int:
        """Stable across processes and hosts (crc32, never Python's salted hash())."""
        return zlib.crc32(f"{tenant_id}:{channel_id}:{conversation_key}".encode()) % self.shards

    def _inbound_queue_spec(self, shard: int) -> Queue:
        return Queue(self.inbound_queue(shard), {**SAC, **self._type, "x-dead-letter-exchange": self.dlx})

    def _outbound_queue_spec(self, slot: int) -> Queue:
        return Queue(self.outbound_queue(slot), {**SAC, **self._type, "x-dead-letter-exchange": self.dlx})

    def inbound_shards(self) -> ShardQueues:
        queues = tuple(self._inbound_queue_spec(k) for k in range(self.shards))
        return ShardQueues(self.shards, queues, tuple(self.retry_queue(k) for k in range(self.shards)), self.dlx)

    def outbound_shards(self) -> ShardQueues:
        queues = tuple(self._outbound_queue_spec(slot) for slot in range(self.outbound_slots))
        return ShardQueues(self.outbound_slots, queues, None, self.dlx)

    def declarations(self) -> tuple[list[Exchange], list[Queue], list[Binding]]:
        exchanges = [
            Exchange(self.inbound, aio_pika.ExchangeType.DIRECT),
            Exchange(self.outbound, aio_pika.ExchangeType.DIRECT),
            Exchange(self.dlx, aio_pika.ExchangeType.FANOUT),
        ]
        queues = [Queue(self.dead)]
        bindings = [Binding(self.dead, self.dlx, "")]
        for k in range(self.shards):
            queues += [
                self._inbound_queue_spec(k),
                Queue(
                    self.retry_queue(k),
                    {
                        **self._type,
                        "x-message-ttl": RETRY_DELAY_MS,
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": self.inbound_queue(k),
                    },
                ),
            ]
            bindings.append(Binding(self.inbound_queue(k), self.inbound, str(k)))
        for slot in range(self.outbound_slots):
            queues.append(self._outbound_queue_spec(slot))
            bindings.append(Binding(self.outbound_queue(slot), self.outbound, self._outbound_slot_key(slot)))
        return exchanges, queues, bindings


async def declare_topology(channel: AbstractChannel, topology: Topology) -> None:
    """Idempotent: declaring what exists with the same arguments is a no-op on the broker."""
    exchanges, queues, bindings = topology.declarations()
    for ex in exchanges:
        await channel.declare_exchange(ex.name, ex.type, durable=True)
    for q in queues:
        await channel.declare_queue(q.name, durable=True, arguments=q.arguments)
    for b in bindings:
        queue = await channel.get_queue(b.queue, ensure=False)
        await queue.bind(b.exchange, b.routing_key)


class ShardCountMismatch(RuntimeError):
    """The broker has shard queues beyond ENGINE_SHARDS: they were made with a larger count."""


async def check_shard_count(connection: AbstractConnection, topology: Topology) -> None:
    """Refuse to run with fewer shards than the broker's queues were made with: the messages in the
    queues past the count would never be consumed. (A larger count is safe: its queues are declared.)
    Probes on a channel of its own, since the broker closes a channel whose passive declare fails."""
    beyond = topology.inbound_queue(topology.shards)
    probe = await connection.channel()
    try:
        await probe.declare_queue(beyond, passive=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return
    finally:
        await probe.close()
    raise ShardCountMismatch(
        f"the broker has the queue {beyond}, so its shard queues were made with more than ENGINE_SHARDS="
        f"{topology.shards}; the count is fixed for the life of the queues: set ENGINE_SHARDS to the count "
        "they were made with, or drain and delete them first"
    )


async def delete_topology(channel: AbstractChannel, topology: Topology) -> None:
    """Remove every exchange and queue of the topology (tests and `engine bus-reset`)."""
    exchanges, queues, _ = topology.declarations()
    for q in queues:
        await channel.queue_delete(q.name)
    for ex in exchanges:
        await channel.exchange_delete(ex.name)


async def open_for_shards(
    url: str, name: str, topology: Topology, prefetch: int
) -> tuple[AbstractRobustConnection, AbstractRobustChannel]:
    """What a shard consumer (the worker, the sender) opens before it takes shards: a robust
    connection, the shard count checked against the broker's queues, a channel with the prefetch and
    the topology declared on it."""
    connection = await connect(url, name)
    try:
        await check_shard_count(connection, topology)
        channel = await open_channel(connection, prefetch=prefetch)
        await declare_topology(channel, topology)
    except BaseException:
        await connection.close()
        raise
    return connection, channel
