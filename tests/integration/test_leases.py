"""Shard leases on the real database: a shard is taken only when free, already ours, or held by a
member whose lease expired; leaving gives up every shard and the lease at once; members dead for
long are pruned."""

from __future__ import annotations

import asyncpg

from engine.bus.shards import Membership
from tests.harness import count

TTL = 3.0


async def test_claims_respect_live_owners_and_take_over_expired_ones(pool: asyncpg.Pool) -> None:
    a, b = Membership(pool, "worker", TTL), Membership(pool, "worker", TTL)
    assert a.me.startswith("worker-")
    assert await a.heartbeat() == [a.me]
    assert await a.claim({0, 1}) == {0, 1}
    assert sorted(await b.heartbeat()) == sorted([a.me, b.me])
    assert await b.claim({1, 2}) == {2}  # 1 is a's, and a is alive
    assert await a.claim({0, 1}) == {0, 1}  # renewing what we hold
    await pool.execute(
        "UPDATE worker_leases SET heartbeat_at = now() - interval '10 seconds' WHERE worker_id = $1", a.me
    )
    assert await b.heartbeat() == [b.me]  # a's lease expired: it is no longer a member
    assert await b.claim({0, 1}) == {0, 1}  # ... and its shards can be taken
    await b.disown(0)
    assert await a.claim({0}) == {0}  # a row given up is free


async def test_leaving_gives_up_every_shard_and_the_lease(pool: asyncpg.Pool) -> None:
    a, b = Membership(pool, "worker", TTL), Membership(pool, "worker", TTL)
    await a.heartbeat()
    await b.heartbeat()
    await a.claim({0, 1, 2})
    await b.claim({3})
    await a.leave()
    assert await count(pool, "SELECT count(*) FROM worker_leases WHERE worker_id = $1", a.me) == 0
    assert await count(pool, "SELECT count(*) FROM shard_owners WHERE owner = $1", a.me) == 0
    assert await b.claim({0, 1, 2, 3}) == {0, 1, 2, 3}  # at once, without waiting for a lease to expire


async def test_members_dead_for_long_are_pruned(pool: asyncpg.Pool) -> None:
    a, b = Membership(pool, "worker", TTL), Membership(pool, "worker", TTL)
    await a.heartbeat()
    await b.heartbeat()
    await pool.execute("UPDATE worker_leases SET heartbeat_at = now() - interval '1 hour' WHERE worker_id = $1", a.me)
    await pool.execute(
        "UPDATE worker_leases SET heartbeat_at = now() - interval '60 seconds' WHERE worker_id = $1", b.me
    )
    c = Membership(pool, "worker", TTL)
    assert await c.heartbeat() == [c.me]
    # a, silent for far longer than 30 leases, is gone; b (20 leases) is only not a member.
    assert await count(pool, "SELECT count(*) FROM worker_leases WHERE worker_id = $1", a.me) == 0
    assert await count(pool, "SELECT count(*) FROM worker_leases WHERE worker_id = $1", b.me) == 1
