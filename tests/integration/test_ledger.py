"""The idempotency ledger on the real database: a flush of an event already in inbound_events
writes nothing for it (no message, no reply, no tool run, no state) and reports it as a duplicate,
while the other events of the same flush are written."""

from __future__ import annotations

import time

import asyncpg

from engine.models import (
    ChannelType,
    Contact,
    Conversation,
    DeliveryStatus,
    InboundEvent,
    MessageType,
    Outcome,
    Reply,
    StatusEvent,
    ToolRun,
)
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


async def test_one_flush_writes_each_conversation_and_contact_its_own_last_state(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    channel = (await load_tenant(settings))["tg"]
    tenant = str(await pool.fetchval("SELECT tenant_id FROM channels WHERE id = $1", channel))
    rows = store.FlushRows()
    for n, chat in enumerate(("1", "2", "1", "2"), start=1):
        conv_id, kid = conversation_id(channel, f"chat-{chat}"), contact_id(channel, f"user-{chat}")
        conversation = Conversation(conv_id, tenant, channel, kid, f"chat-{chat}", variables={"n": n})
        contact = Contact(kid, tenant, channel, f"user-{chat}", name=f"{chat}:{n}")
        run = _tool_run(tenant, conv_id, str(n))
        run.response, run.started_at = (None, None) if n == 1 else ({"n": n}, 1_700_000_000.0)
        outcome = Outcome(replies=[Reply(f"r{n}")], tool_runs=[run])
        stage_message(rows, _event(channel, tenant, f"e{n}", f"m{n}", chat=chat), outcome, conversation, contact, 1.0)
    assert await _flush(pool, rows) == set()

    states = await pool.fetch("SELECT external_key, variables FROM conversations ORDER BY external_key")
    assert [(r["external_key"], r["variables"]) for r in states] == [("chat-1", {"n": 3}), ("chat-2", {"n": 4})]
    names = await pool.fetch("SELECT name FROM channel_contacts ORDER BY external_id")
    assert [r["name"] for r in names] == ["1:3", "2:4"]
    payload = await pool.fetchval("SELECT payload FROM message_history WHERE external_id = 'e1'")
    assert payload["raw"] == {}  # the payload is written, not null
    runs = await pool.fetch("SELECT response, created_at FROM tool_executions ORDER BY request->>'attempt'")
    assert runs[0]["response"] is None
    assert [r["response"] for r in runs[1:]] == [{"n": 2}, {"n": 3}, {"n": 4}]
    assert runs[1]["created_at"].timestamp() == 1_700_000_000.0

    # A receipt alone in a flush: applied to the reply it names, no duplicates reported.
    reply_id = await pool.fetchval("SELECT id FROM channel_messages WHERE body->>'text' = 'r1'")
    await pool.execute(
        "UPDATE channel_messages SET status = 'sent', platform_message_id = 'p1' WHERE id = $1", reply_id
    )
    receipts = store.FlushRows()
    receipts.statuses.append(
        (("delivery", "1"), StatusEvent(channel, tenant, "p1", DeliveryStatus.READ, 1.0, "chat-1"))
    )
    assert await _flush(pool, receipts) == set()
    assert await pool.fetchval("SELECT status FROM channel_messages WHERE id = $1", reply_id) == "read"
