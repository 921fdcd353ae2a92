"""Channel rows, with their credentials decrypted only in memory, behind a short TTL cache.

Receivers and senders look a channel up on every webhook or send; the cache turns that into one
query per channel every few seconds (the lookups waiting on an expired entry share it), and a
deactivated channel stops within the TTL. Ids that name no channel (made up by whoever posts to the
webhook URL) are remembered in a separate LRU of bounded size, so a flood of them costs one query
each at most and never evicts a known channel.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict

import asyncpg

from engine.crypto import Vault
from engine.models import ChannelInfo, ChannelType
from engine.store.pool import TRANSIENT_ERRORS

MAX_MISSES = 10_000
SELECT_CHANNEL = """
SELECT id::text, tenant_id::text, bot_id::text, type, external_id, credentials, config, active
FROM channels WHERE id = $1
"""


class ChannelDirectory:
    def __init__(self, pool: asyncpg.Pool, vault: Vault, ttl: float, max_misses: int = MAX_MISSES) -> None:
        self._pool = pool
        self._vault = vault
        self._ttl = ttl
        self._max_misses = max(1, max_misses)
        self._cache: dict[str, tuple[float, ChannelInfo]] = {}  # known channels: as many as there are rows
        self._misses: OrderedDict[str, float] = OrderedDict()  # id -> expiry, least recently used first
        self._loads: dict[str, asyncio.Future[ChannelInfo | None]] = {}  # the query in flight, per id

    async def get(self, channel_id: str) -> ChannelInfo | None:
        """The channel, or None when the id is not a uuid or names no channel. While the database is
        away an expired entry is served as it was; with none, the database's error is raised."""
        now = time.monotonic()
        hit = self._cache.get(channel_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        missed = self._misses.get(channel_id)
        if missed is not None and missed > now:
            self._misses.move_to_end(channel_id)
            return None
        try:
            key = uuid.UUID(channel_id)
        except ValueError:
            return None
        # Under load hundreds of sends find the entry expired at once: one query answers them all.
        load = self._loads.get(channel_id)
        if load is None:
            load = self._loads[channel_id] = asyncio.ensure_future(self._load(channel_id, key))
            load.add_done_callback(lambda done: self._loaded(channel_id, done))
        try:
            return await asyncio.shield(load)  # a caller cancelled leaves the query to the others
        except TRANSIENT_ERRORS:
            if hit is not None:  # the database is away: what we knew a moment ago still holds
                return hit[1]
            raise

    def _loaded(self, channel_id: str, load: asyncio.Future[ChannelInfo | None]) -> None:
        del self._loads[channel_id]
        if not load.cancelled():
            load.exception()  # its callers had it; not "never retrieved" if they were all cancelled

    async def _load(self, channel_id: str, key: uuid.UUID) -> ChannelInfo | None:
        row = await self._pool.fetchrow(SELECT_CHANNEL, key)
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
        now = time.monotonic()
        if info is None:
            self._cache.pop(channel_id, None)
            self._misses[channel_id] = now + self._ttl
            self._misses.move_to_end(channel_id)
            while len(self._misses) > self._max_misses:
                self._misses.popitem(last=False)
        else:
            self._misses.pop(channel_id, None)
            self._cache[channel_id] = (now + self._ttl, info)
        return info
