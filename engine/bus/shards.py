"""Which shards this process consumes: live members in PostgreSQL, rendezvous hashing over them.

Every process of a role heartbeats a row in worker_leases; the live ones (heartbeat within the lease
TTL) share the shards by rendezvous hashing, so a join or a death moves only the shards it must.

A shard changes hands through shard_owners: the old owner stops consuming, finishes and acks what
it took, and only then gives up the row; the new owner subscribes only once it holds the row (or
the old owner's lease has expired, after a crash, when the broker has already requeued what the
dead process held). So a conversation's next message is never processed before its previous one.
The shard queues are also single-active-consumer, which keeps one consumer per shard even if two
processes disagree for a moment. engine.bus.consumer follows this membership.
"""

from __future__ import annotations

import os
import socket
import uuid
import zlib

import asyncpg

from engine.store import leases


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
        return await leases.heartbeat(self.pool, self.me, self.role, socket.gethostname(), os.getpid(), self.lease_ttl)

    async def claim(self, shards: set[int]) -> set[int]:
        """Take what can be taken of `shards`; returns the ones we now hold."""
        return await leases.claim(self.pool, self.role, self.me, sorted(shards), self.lease_ttl)

    async def disown(self, shard: int) -> None:
        await leases.disown(self.pool, self.role, shard, self.me)

    async def leave(self) -> None:
        """Give up every shard and our lease: call it only once everything taken is acked."""
        await leases.leave(self.pool, self.me)
