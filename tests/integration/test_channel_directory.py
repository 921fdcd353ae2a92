"""The receiver's channel cache: misses are cached too, and the cache stays bounded."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from engine.crypto import Vault
from engine.store import channels
from engine.store.channels import ChannelDirectory


async def test_made_up_channel_ids_do_not_grow_the_cache_without_bound(
    pool: asyncpg.Pool, vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(channels, "MAX_CACHED", 5)
    directory = ChannelDirectory(pool, vault, ttl=60)
    for _ in range(12):
        assert await directory.get(str(uuid.uuid4())) is None
    assert len(directory._cache) <= 5
    assert await directory.get("not-a-uuid") is None  # refused before any query or cache entry
