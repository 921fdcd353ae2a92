"""Process membership and shard ownership: worker_leases (heartbeats) and shard_owners.

A shard row is taken only when it is free, already ours, or held by a member whose lease expired;
it is given up only once what was taken from the shard is committed and acked (engine.bus.shards).
"""

from __future__ import annotations

import asyncpg

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


async def heartbeat(pool: asyncpg.Pool, me: str, role: str, host: str, pid: int, ttl: float) -> list[str]:
    """Renew `me`'s lease, prune long-dead members; returns the live members of the role."""
    async with pool.acquire() as conn:
        await conn.execute(UPSERT_HEARTBEAT, me, role, host, pid)
        await conn.execute(PRUNE_DEAD, ttl * 30)
        return [r["worker_id"] for r in await conn.fetch(SELECT_LIVE, role, ttl)]


async def claim(pool: asyncpg.Pool, role: str, me: str, shards: list[int], ttl: float) -> set[int]:
    rows = await pool.fetch(CLAIM_SHARDS, role, me, shards, ttl)
    return {r["shard"] for r in rows}


async def disown(pool: asyncpg.Pool, role: str, shard: int, me: str) -> None:
    await pool.execute(DISOWN_SHARD, role, shard, me)


async def leave(pool: asyncpg.Pool, me: str) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(DISOWN_ALL, me)
        await conn.execute(DELETE_LEASE, me)
