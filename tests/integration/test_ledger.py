"""The idempotency ledger on the real database: a flush of an event already in inbound_events
writes nothing for it (no message, no reply, no tool run, no state) and reports it as a duplicate,
while the other events of the same flush are written."""

from __future__ import annotations

import time

import asyncpg

from engine.models import ChannelType, Contact, Conversation, InboundEvent, MessageType, Outcome, Reply, ToolRun
from engine.settings import Settings
from engine.store import messages as store
from engine.worker.conversations import contact_id, conversation_id
from engine.worker.staging import stage_message
from tests.harness import count, load_tenant


def _event(channel_id: str, tenant_id: str, event_id: str, text: str, chat: str = "1") -> InboundEvent:
    return InboundEvent(
        channel_id=channel_id,
        tenant_id=tenant_id,
        channel_type=ChannelType.TELEGRAM,
        event_id=event_id,
        conversation_key=f"chat-{chat}",
        contact_key=f"user-{chat}",
        type=MessageType.TEXT,
        timestamp=1.0,
        text=text,
    )


def _tool_run(tenant_id: str, conv: str, attempt: str) -> ToolRun:
    return ToolRun(
        id=f"00000000-0000-0000-0000-00000000000{attempt}",
        tool_name="lookup",
        status="ok",
        attempts=1,
        duration_ms=1.0,
        request={"attempt": attempt},
        response={"ok": True},
        error=None,
        tool_id=None,
        tenant_id=tenant_id,
        conversation_id=conv,
        idempotency_key=f"key-{attempt}",
        started_at=time.time(),
    )


async def _flush(pool: asyncpg.Pool, rows: store.FlushRows) -> set[store.EventKey]:
    async with pool.acquire() as conn, conn.transaction():
        return await store.flush(conn, rows)


async def test_a_flush_of_an_event_already_in_the_ledger_writes_nothing_for_it(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    channel = (await load_tenant(settings))["tg"]
    tenant = str(await pool.fetchval("SELECT tenant_id FROM channels WHERE id = $1", channel))
    conv_id, kid = conversation_id(channel, "chat-1"), contact_id(channel, "user-1")

    def state(step: int) -> tuple[Conversation, Contact]:
        conversation = Conversation(
            conv_id, tenant, channel, kid, "chat-1", variables={"step": step}, tags=[f"t{step}"]
        )
        return conversation, Contact(kid, tenant, channel, "user-1", name=f"Ann {step}")

    first = store.FlushRows()
    conversation, contact = state(1)
    outcome = Outcome(replies=[Reply("first answer")], tool_runs=[_tool_run(tenant, conv_id, "1")])
    stage_message(first, _event(channel, tenant, "e1", "hello"), outcome, conversation, contact, 1_700_000_000.0)
    assert await _flush(pool, first) == set()

    # The same event handled again a minute later (a redelivery the recent-id cache did not catch):
    # other replies, another tool run, another state. Next to it, a new event of another conversation.
    again = store.FlushRows()
    conversation, contact = state(2)
    outcome = Outcome(replies=[Reply("second answer")], tool_runs=[_tool_run(tenant, conv_id, "2")])
    stage_message(again, _event(channel, tenant, "e1", "hello"), outcome, conversation, contact, 1_700_000_060.0)
    other_conv, other_contact = conversation_id(channel, "chat-2"), contact_id(channel, "user-2")
    stage_message(
        again,
        _event(channel, tenant, "e2", "new", chat="2"),
        Outcome(replies=[Reply("to the new one")]),
        Conversation(other_conv, tenant, channel, other_contact, "chat-2"),
        Contact(other_contact, tenant, channel, "user-2"),
        1_700_000_060.0,
    )
    assert await _flush(pool, again) == {(channel, "e1")}  # reported as the ledger's duplicate

    assert await count(pool, "SELECT count(*) FROM inbound_events") == 2
    history = await pool.fetch("SELECT conversation_id::text, direction, text FROM message_history ORDER BY created_at")
    assert [(r["conversation_id"] == conv_id, r["direction"], r["text"]) for r in history] == [
        (True, "inbound", "hello"),
        (True, "outbound", "first answer"),
        (False, "inbound", "new"),
        (False, "outbound", "to the new one"),
    ]
    bodies = await pool.fetch("SELECT body->>'text' AS text FROM channel_messages ORDER BY created_at")
    assert [r["text"] for r in bodies] == ["first answer", "to the new one"]
    assert await pool.fetchval("SELECT request->>'attempt' FROM tool_executions") == "1"
    assert await count(pool, "SELECT count(*) FROM tool_executions") == 1
    # The duplicate's state is not written either: the conversation and contact are as the first left them.
    row = await pool.fetchrow("SELECT variables, tags FROM conversations WHERE id = $1", conv_id)
    assert (row["variables"], list(row["tags"])) == ({"step": 1}, ["t1"])
    assert await pool.fetchval("SELECT name FROM channel_contacts WHERE id = $1", kid) == "Ann 1"
    assert await count(pool, "SELECT count(*) FROM conversations") == 2
