"""The receiver's channel cache: misses are cached in a bounded LRU that never evicts a known channel."""

from __future__ import annotations

import uuid

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
