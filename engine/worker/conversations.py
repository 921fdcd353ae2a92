"""The worker's in-memory conversation cache, loaded from PostgreSQL the first time it is needed.

A worker is the only writer of the conversations of the shards it owns, so its cache is the truth
for them; it is dropped for a shard when the shard moves away, and reloaded when it comes back.
With each conversation it keeps the ids of its most recent events: a redelivery of an event the
previous owner committed but never acked is recognised here, before it is processed again.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace

import asyncpg

from engine.coalescer import Coalescer
from engine.models import Contact, Conversation, InboundEvent, stable_key
from engine.store import conversations as store

# What a redelivery after a hand-over or a crash can bring again is what the last owner committed and
# had not acked: its last flush or two, of which one conversation rarely has more than a few events.
# 64 covers that with room; anything older is caught by the ledger at flush. It bounds a cached
# conversation's memory (64 ids: ~5-7 KiB; it was 256, ~20 KiB, so 100,000 conversations ~2 GiB).
RECENT_EVENTS = 64


def conversation_id(event_channel_id: str, conversation_key: str) -> str:
    return stable_key(event_channel_id, "conversation", conversation_key)


def contact_id(event_channel_id: str, contact_key: str) -> str:
    return stable_key(event_channel_id, "contact", contact_key)


@dataclass(slots=True)
class Entry:
    conversation: Conversation
    contact: Contact
    shard: int
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT_EVENTS))
    pending: int = 0  # staged messages not yet committed: never evict while > 0

    def seen(self, event_id: str) -> bool:
        return event_id in self.recent

    def remember(self, event_id: str) -> None:
        self.recent.append(event_id)

    def snapshot(self) -> tuple[Conversation, Contact]:
        """A copy to restore if handling a message fails half-way (its dicts and lists copied one
        level deep: the brain replaces values, it does not edit them in place)."""
        c, k = self.conversation, self.contact
        return (
            replace(c, variables=dict(c.variables), tags=list(c.tags)),
            replace(k, attributes=dict(k.attributes)),
        )

    def restore(self, saved: tuple[Conversation, Contact]) -> None:
        self.conversation, self.contact = saved


class ConversationCache:
    def __init__(self, pool: asyncpg.Pool, max_entries: int) -> None:
        self._pool = pool
        self._max = max_entries
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        # Lanes seeing a conversation for the first time at about the same moment share one load.
        self._stored: Coalescer[tuple[str, str], store.Stored] = Coalescer(self._load_many)

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, event: InboundEvent, shard: int) -> Entry:
        cid = conversation_id(event.channel_id, event.conversation_key)
        entry = self._entries.get(cid)
        if entry is not None:
            self._entries.move_to_end(cid)
            return entry
        entry = await self._load(event, cid, shard)
        self._entries[cid] = entry
        return entry

    async def _load_many(self, keys: list[tuple[str, str]]) -> list[store.Stored]:
        async with self._pool.acquire() as conn:
            return await store.load_many(conn, keys, RECENT_EVENTS)

    async def _load(self, event: InboundEvent, cid: str, shard: int) -> Entry:
        kid = contact_id(event.channel_id, event.contact_key)
        conversation, contact, recent = await self._stored((cid, kid))
        if contact is None:
            contact = Contact(kid, event.tenant_id, event.channel_id, event.contact_key)
        if conversation is None:
            conversation = Conversation(
                id=cid,
                tenant_id=event.tenant_id,
                channel_id=event.channel_id,
                contact_id=kid,
                key=event.conversation_key,
            )
        entry = Entry(conversation, contact, shard)
        entry.recent.extend(reversed(recent))
        return entry

    async def get_existing(self, channel_id: str, conversation_key: str, shard: int) -> Entry | None:
        """The conversation's state if it exists (cached or stored), else None."""
        cid = conversation_id(channel_id, conversation_key)
        entry = self._entries.get(cid)
        if entry is not None:
            return entry
        async with self._pool.acquire() as conn:
            conversation = await store.load_conversation(conn, cid)
            if conversation is None:
                return None
            contact = await store.load_contact(conn, conversation.contact_id)
            recent = await store.recent_event_ids(conn, cid, RECENT_EVENTS)
        assert contact is not None  # a conversation row references its contact
        entry = self._entries[cid] = Entry(conversation, contact, shard)
        entry.recent.extend(reversed(recent))
        return entry

    def evict(self, conversation_id: str) -> None:
        self._entries.pop(conversation_id, None)

    def evict_shard(self, shard: int) -> None:
        for cid in [cid for cid, e in self._entries.items() if e.shard == shard]:
            del self._entries[cid]

    def trim(self) -> None:
        """Drop least recently used idle conversations beyond the size bound."""
        excess = len(self._entries) - self._max
        if excess <= 0:  # the usual case: no copy of the keys on every flush
            return
        for cid in list(self._entries):
            if excess <= 0:
                break
            if self._entries[cid].pending == 0:
                del self._entries[cid]
                excess -= 1
