"""The worker's conversation cache on the real database: conversations first seen at the same moment
are loaded together, and each gets its own stored state, contact and most recent event ids (or a new
conversation when nothing is stored)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from engine.models import Contact, Conversation, Outcome, Reply
from engine.settings import Settings
from engine.store import messages as store
from engine.worker import conversations
from engine.worker.conversations import ConversationCache, contact_id, conversation_id
from engine.worker.staging import stage_message
from tests.harness import load_tenant
from tests.integration.test_ledger import _event, _flush


async def test_concurrent_first_loads_each_get_their_own_stored_state_and_recent_ids(
    settings: Settings, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel = (await load_tenant(settings))["tg"]
    tenant = str(await pool.fetchval("SELECT tenant_id FROM channels WHERE id = $1", channel))
    monkeypatch.setattr(conversations, "RECENT_EVENTS", 3)  # a small window, to see the limit
    for chat, events in (("1", 5), ("2", 2)):
        cid, kid = conversation_id(channel, f"chat-{chat}"), contact_id(channel, f"user-{chat}")
        for n in range(events):
            rows = store.FlushRows()
            conversation = Conversation(cid, tenant, channel, kid, f"chat-{chat}", variables={"n": n})
            contact = Contact(kid, tenant, channel, f"user-{chat}", name=f"Ann {chat}")
            event = _event(channel, tenant, f"c{chat}-e{n}", "hi", chat=chat)
            stage_message(rows, event, Outcome(replies=[Reply("ok")]), conversation, contact, 1_700_000_000.0 + n)
            await _flush(pool, rows)

    cache = ConversationCache(pool, 100)
    first, second, new = await asyncio.gather(
        *(cache.get(_event(channel, tenant, f"next-{chat}", "again", chat=chat), 0) for chat in ("1", "2", "3"))
    )

    assert (first.conversation.variables, first.contact.name) == ({"n": 4}, "Ann 1")
    assert list(first.recent) == ["c1-e2", "c1-e3", "c1-e4"]  # the last three, oldest first
    assert (second.conversation.variables, second.contact.name) == ({"n": 1}, "Ann 2")
    assert list(second.recent) == ["c2-e0", "c2-e1"]
    assert new.conversation.is_new and new.contact.name is None and list(new.recent) == []
    assert new.conversation.id == conversation_id(channel, "chat-3")
