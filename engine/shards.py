"""Which shards this process consumes: live members in PostgreSQL, rendezvous hashing over them.

Every process of a role heartbeats a row in worker_leases; the live ones (heartbeat within the lease
TTL) share the shards by rendezvous hashing, so a join or a death moves only the shards it must.
Correctness does not depend on this: the shard queues are single-active-consumer, so even while two
processes briefly both subscribe to a shard, only one receives its messages. This only spreads load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
import zlib
from collections.abc import Awaitable, Callable

import asyncpg
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from engine import metrics

log = logging.getLogger(__name__)

UPSERT_HEARTBEAT = """
INSERT INTO worker_leases (worker_id, role, host, pid) VALUES ($1, $2, $3, $4)
ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = now()
"""
SELECT_LIVE = """
SELECT worker_id FROM worker_leases
WHERE role = $1 AND heartbeat_at > now() - make_interval(secs => $2)
ORDER BY worker_id
"""
DELETE_LEASE = "DELETE FROM worker_leases WHERE worker_id = $1"
PRUNE_DEAD = "DELETE FROM worker_leases WHERE heartbeat_at < now() - make_interval(secs => $1)"


def new_member_id(role: str) -> str:
    return f"{role}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def assign(shards: int, members: list[str], me: str) -> set[int]:
    """The shards `me` owns among `members` (rendezvous: highest crc32(member:shard) wins)."""
    if not members:
        return set(range(shards))
    return {k for k in range(shards) if max(members, key=lambda m: zlib.crc32(f"{m}:{k}".encode())) == me}


class Membership:
    def __init__(self, pool: asyncpg.Pool, role: str, lease_ttl: float) -> None:
        self.pool = pool
        self.role = role
        self.lease_ttl = lease_ttl
        self.me = new_member_id(role)

    async def heartbeat(self) -> list[str]:
        """Renew our lease; returns the live members (always including us)."""
        async with self.pool.acquire() as conn:
            await conn.execute(UPSERT_HEARTBEAT, self.me, self.role, socket.gethostname(), os.getpid())
            await conn.execute(PRUNE_DEAD, self.lease_ttl * 30)
            return [r["worker_id"] for r in await conn.fetch(SELECT_LIVE, self.role, self.lease_ttl)]

    async def leave(self) -> None:
        await self.pool.execute(DELETE_LEASE, self.me)


class ShardSubscriptions:
    """Consume exactly the shards this member owns, and follow ownership as members come and go.

    on_message(shard, message) is called for each delivery; the owner reports each ack or reject
    through done(shard) so that a shard is handed over only once nothing of it is in flight.
    """

    def __init__(
        self,
        channel: AbstractChannel,
        membership: Membership,
        shards: int,
        queue_name: Callable[[int], str],
        on_message: Callable[[int, AbstractIncomingMessage], None],
        on_release: Callable[[int], Awaitable[None]],
    ) -> None:
        self.channel = channel
        self.membership = membership
        self.shards = shards
        self.queue_name = queue_name
        self.on_message = on_message
        self.on_release = on_release
        self.consumers: dict[int, tuple[AbstractQueue, str]] = {}
        self.in_flight: dict[int, int] = {}
        self._idle: dict[int, asyncio.Event] = {}

    def received(self, shard: int) -> None:
        self.in_flight[shard] = self.in_flight.get(shard, 0) + 1
        self._idle.setdefault(shard, asyncio.Event()).clear()

    def done(self, shard: int) -> None:
        self.in_flight[shard] -= 1
        if self.in_flight[shard] == 0:
            self._idle[shard].set()

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

    async def follow(self, interval: float) -> None:
        """Heartbeat and rebalance forever (run it as a task; cancel it to stop rebalancing)."""
        while True:
            try:
                members = await self.membership.heartbeat()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # Keep what we own: single-active-consumer keeps order even if our lease lapses.
                log.warning("heartbeat failed (%s); keeping current shards", type(exc).__name__)
                await asyncio.sleep(interval)
                continue
            wanted = assign(self.shards, members, self.membership.me)
            for shard in sorted(wanted - self.consumers.keys()):
                await self._consume(shard)
            for shard in sorted(self.consumers.keys() - wanted):
                await self.release(shard)
            metrics.OWNED_SHARDS.labels(self.membership.role).set(len(self.consumers))
            await asyncio.sleep(interval)

    async def _consume(self, shard: int) -> None:
        queue = await self.channel.get_queue(self.queue_name(shard), ensure=False)

        async def deliver(message: AbstractIncomingMessage) -> None:
            self.received(shard)
            self.on_message(shard, message)

        self.consumers[shard] = (queue, await queue.consume(deliver))
        self.in_flight.setdefault(shard, 0)
        log.info("%s consuming %s", self.membership.me, self.queue_name(shard))

    async def release(self, shard: int) -> None:
        """Stop consuming a shard, let the owner finish what it holds of it, then forget it."""
        queue, tag = self.consumers.pop(shard)
        await queue.cancel(tag)
        await self.on_release(shard)
        log.info("%s released %s", self.membership.me, self.queue_name(shard))

    async def stop(self) -> None:
        """Stop taking new messages from every shard (what is held stays to be finished)."""
        for queue, tag in list(self.consumers.values()):
            with contextlib.suppress(Exception):  # a closed channel already stopped delivering
                await queue.cancel(tag)
        self.consumers.clear()
