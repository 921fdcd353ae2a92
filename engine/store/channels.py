"""Channel rows, with their credentials decrypted only in memory, behind a short TTL cache.

Receivers and senders look a channel up on every webhook or send; the cache turns that into one
query per channel every few seconds, and a deactivated channel stops within the TTL.
"""

from __future__ import annotations

import time
import uuid

import asyncpg

from engine.crypto import Vault
from engine.models import ChannelInfo, ChannelType
from engine.store.pool import TRANSIENT_ERRORS

MAX_CACHED = 10_000
SELECT_CHANNEL = """
SELECT id::text, tenant_id::text, bot_id::text, type, external_id, credentials, config, active
FROM channels WHERE id = $1
"""


class ChannelDirectory:
    def __init__(self, pool: asyncpg.Pool, vault: Vault, ttl: float) -> None:
        self._pool = pool
        self._vault = vault
        self._ttl = ttl
        self._cache: dict[str, tuple[float, ChannelInfo | None]] = {}

    async def get(self, channel_id: str) -> ChannelInfo | None:
        """The channel, or None when the id is not a uuid or names no channel. While the database is
        away an expired entry is served as it was; with none, the database's error is raised."""
        now = time.monotonic()
        hit = self._cache.get(channel_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            key = uuid.UUID(channel_id)
        except ValueError:
            return None
        try:
            row = await self._pool.fetchrow(SELECT_CHANNEL, key)
        except TRANSIENT_ERRORS:
            if hit is not None:  # the database is away: what we knew a moment ago still holds
                return hit[1]
            raise
        info = None
        if row is not None:
            info = ChannelInfo(
                id=row["id"],
                tenant_id=row["tenant_id"],
                bot_id=row["bot_id"],
                type=ChannelType(row["type"]),
                external_id=row["external_id"],
                secrets=self._vault.decrypt(row["credentials"]),
                config=row["config"],
                active=row["active"],
            )
        if len(self._cache) >= MAX_CACHED:
            # Webhooks to made-up ids are cached as misses too (so they cost no query each);
            # keep that from growing without bound.
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
        self._cache[channel_id] = (now + self._ttl, info)
        return info
