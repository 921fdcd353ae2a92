"""Channel rows, with their credentials decrypted only in memory, behind a short TTL cache.

Receivers and senders look a channel up on every webhook or send; the cache turns that into one
query per channel every few seconds, made in the background while the entry it refreshes is still
served, and a deactivated channel stops one query after the TTL. Ids that name no channel (made up
by whoever posts to the webhook URL) are remembered in a separate LRU of bounded size, so a flood of
them costs one query each at most and never evicts a known channel.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict

import asyncpg

from engine.crypto import Vault
from engine.models import ChannelInfo, ChannelType

log = logging.getLogger(__name__)

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
        """The channel, or None when the id is not a uuid or names no channel; with no entry and the
        database away, the database's error is raised.

        A known channel whose entry expired is served as it was while one query refreshes it in the
        background: webhooks and sends never wait on the database for a channel they know (a commit
        that stalls PostgreSQL for half a second would otherwise hold every request that finds the
        entry expired), and a change reaches them one query after the TTL."""
        now = time.monotonic()
        hit = self._cache.get(channel_id)
        if hit is not None:
            if hit[0] <= now:
                _ = self._load_once(channel_id, uuid.UUID(channel_id))  # in the background
            return hit[1]
        missed = self._misses.get(channel_id)
        if missed is not None and missed > now:
            self._misses.move_to_end(channel_id)
            return None
        try:
            key = uuid.UUID(channel_id)
        except ValueError:
            return None
        # a caller cancelled leaves the query to the others
        return await asyncio.shield(self._load_once(channel_id, key))

    def _load_once(self, channel_id: str, key: uuid.UUID) -> asyncio.Future[ChannelInfo | None]:
        """The query for this id in flight, started if there is none: under load hundreds of lookups
        find an entry expired (or missing) at once, and one query answers them all."""
        load = self._loads.get(channel_id)
        if load is None:
            load = self._loads[channel_id] = asyncio.ensure_future(self._load(channel_id, key))
            load.add_done_callback(lambda done: self._loaded(channel_id, done))
        return load

    def _loaded(self, channel_id: str, load: asyncio.Future[ChannelInfo | None]) -> None:
        del self._loads[channel_id]
        # read the outcome here, so asyncio never reports an exception nobody retrieved
        if load.cancelled() or (exc := load.exception()) is None:
            return
        if (hit := self._cache.get(channel_id)) is not None:  # a background refresh failed (database away)
            log.warning("channel %s not refreshed (%s); serving what was read before", channel_id, type(exc).__name__)
            self._cache[channel_id] = (time.monotonic() + self._ttl, hit[1])  # try again after another TTL

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
