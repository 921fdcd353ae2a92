"""The channel cache of receivers and senders: misses are cached in a bounded LRU that never evicts a
known channel, and the lookups that find an entry expired are answered from it at once while one
query refreshes it."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, cast

import asyncpg

from engine.crypto import Vault
from engine.settings import Settings
from engine.store.channels import ChannelDirectory
from tests.harness import load_tenant


async def test_made_up_channel_ids_never_evict_known_channels(
    settings: Settings, pool: asyncpg.Pool, vault: Vault
) -> None:
    known = (await load_tenant(settings))["tg"]
    directory = ChannelDirectory(pool, vault, ttl=60, max_misses=5)
    assert (await directory.get(known)) is not None
    made_up = [str(uuid.uuid4()) for _ in range(12)]
    for channel_id in made_up:
        assert await directory.get(channel_id) is None
    assert len(directory._misses) == 5
    assert list(directory._misses) == made_up[-5:]  # least recently used went first
    assert known in directory._cache  # the flood did not touch it
    await pool.execute("UPDATE channels SET active = false WHERE id = $1", uuid.UUID(known))
    cached = await directory.get(known)
    assert cached is not None and cached.active  # still served from the cache (no query) within the TTL
    assert await directory.get("not-a-uuid") is None  # refused before any query or cache entry


class _Counting:
    """The real pool, counting the queries made through it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool, self.queries = pool, 0

    async def fetchrow(self, *args: Any) -> Any:
        self.queries += 1
        return await self.pool.fetchrow(*args)


async def test_the_lookups_that_find_a_channel_expired_get_it_at_once_and_share_one_refresh(
    settings: Settings, pool: asyncpg.Pool, vault: Vault
) -> None:
    known = (await load_tenant(settings))["tg"]
    counting = _Counting(pool)
    directory = ChannelDirectory(cast(asyncpg.Pool, counting), vault, ttl=0)  # every entry expired at once
    first = await asyncio.gather(*(directory.get(known) for _ in range(50)))
    assert counting.queries == 1
    assert all(info is not None and info.active for info in first)
    await pool.execute("UPDATE channels SET active = false WHERE id = $1", uuid.UUID(known))
    second = await asyncio.gather(*(directory.get(known) for _ in range(50)))
    assert all(info is not None and info.active for info in second)  # served as it was: nobody waited
    await asyncio.gather(*directory._loads.values())  # the one refresh they started, in the background
    assert counting.queries == 2
    third = await directory.get(known)
    assert third is not None and not third.active  # what the refresh read
