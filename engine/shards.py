"""Which shards this process consumes: live members in PostgreSQL, rendezvous hashing over them.

Every process of a role heartbeats a row in worker_leases; the live ones (heartbeat within the lease
TTL) share the shards by rendezvous hashing, so a join or a death moves only the shards it must.

A shard changes hands through shard_owners: the old owner stops consuming, finishes and acks what
it took, and only then gives up the row; the new owner subscribes only once it holds the row (or
the old owner's lease has expired, after a crash, when the broker has already requeued what the
dead process held). So a conversation's next message is never processed before its previous one.
The shard queues are also single-active-consumer, which keeps one consumer per shard even if two
processes disagree for a moment.
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
# Take the shards that are free, already ours, or held by a member whose lease has expired.
CLAIM_SHARDS = """
INSERT INTO shard_owners (role, shard, owner)
SELECT $1, shard, $2 FROM unnest($3::int[]) AS shard
ON CONFLICT (role, shard) DO UPDATE SET owner = EXCLUDED.owner, claimed_at = now()
WHERE shard_owners.owner = EXCLUDED.owner OR NOT EXISTS (
    SELECT 1 FROM worker_leases w
    WHERE w.worker_id = shard_owners.owner AND w.heartbeat_at > now() - make_interval(secs => $4))
RETURNING shard
"""
DISOWN_SHARD = "DELETE FROM shard_owners WHERE role = $1 AND shard = $2 AND owner = $3"
DISOWN_ALL = "DELETE FROM shard_owners WHERE owner = $1"
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

    async def claim(self, shards: set[int]) -> set[int]:
        """Take what can be taken of `shards`; returns the ones we now hold."""
        rows = await self.pool.fetch(CLAIM_SHARDS, self.role, self.me, sorted(shards), self.lease_ttl)
        return {r["shard"] for r in rows}

    async def disown(self, shard: int) -> None:
        await self.pool.execute(DISOWN_SHARD, self.role, shard, self.me)

    async def leave(self) -> None:
        """Give up every shard and our lease: call it only once everything taken is acked."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(DISOWN_ALL, self.me)
            await conn.execute(DELETE_LEASE, self.me)


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
        self.unowned: set[int] = set()  # shards released whose shard_owners row is still ours

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
                await self._rebalance()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
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
        wanted = assign(self.shards, members, self.membership.me)
        for shard in sorted(self.consumers.keys() - wanted):
            await self.release(shard)
        if missing := wanted - self.consumers.keys():
            for shard in sorted(await self.membership.claim(missing)):
                await self._consume(shard)

    async def _consume(self, shard: int) -> None:
        queue = await self.channel.get_queue(self.queue_name(shard), ensure=False)

        async def deliver(message: AbstractIncomingMessage) -> None:
            self.received(shard)
            self.on_message(shard, message)

        self.consumers[shard] = (queue, await queue.consume(deliver))
        self.in_flight.setdefault(shard, 0)
        log.info("%s consuming %s", self.membership.me, self.queue_name(shard))

    async def release(self, shard: int) -> None:
        """Stop consuming a shard, let the owner finish and ack what it holds of it, then give it up."""
        queue, tag = self.consumers.pop(shard)
        await queue.cancel(tag)
        await self.on_release(shard)
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
