"""Conversations and their transcripts, the handoff queue, an agent's reply, handback and close, and
contacts. Conversation state is the owning worker's: every change travels as a command through the
conversation's inbound shard, so it applies in order with the conversation's messages."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web

from engine.admin.api.broker import ApiBroker, BrokerUnavailable
from engine.admin.api.context import Call
from engine.admin.api.models import (
    AgentReplyIn,
    CommandOut,
    ContactOut,
    ContactPage,
    ContactPatch,
    ContactQuery,
    ConversationOut,
    ConversationPage,
    ConversationQuery,
    MessageOut,
    MessagePage,
    PageQuery,
    decode_cursor,
    encode_cursor,
)
from engine.admin.api.routing import ApiError, Reply, Route, not_found
from engine.models import ChannelType, ConversationCommand, stable_id
from engine.store import api_conversations as sql
from engine.store.recovery import UPSERT_PREFERENCES

BROKER = web.AppKey("api_broker", ApiBroker)
READ, AGENT = ("read", "agent"), ("agent",)
MAX_CONTACT_CONVERSATIONS = 100


async def list_conversations(call: Call) -> Reply:
    q: ConversationQuery = call.query
    at, last = decode_cursor(q.cursor) or (None, None)
    async with call.db() as conn:
        rows = await conn.fetch(sql.SELECT_CONVERSATIONS, call.tenant_id, q.status, q.channel_id, q.contact_id,
                                q.updated_since, at, last, q.limit)  # fmt: skip
    items = [ConversationOut(**dict(r)) for r in rows]
    cursor = encode_cursor(items[-1].last_message_at, items[-1].id) if len(items) == q.limit else None
    return Reply(ConversationPage(items=items, next_cursor=cursor))


async def handoff_queue(call: Call) -> Reply:
    q: PageQuery = call.query
    at, last = decode_cursor(q.cursor) or (None, None)
    async with call.db() as conn:
        rows = await conn.fetch(sql.SELECT_HANDOFF_QUEUE, call.tenant_id, at, last, q.limit)
    items = [ConversationOut(**dict(r)) for r in rows]
    cursor = encode_cursor(items[-1].last_message_at, items[-1].id) if len(items) == q.limit else None
    return Reply(ConversationPage(items=items, next_cursor=cursor))


async def _conversation(conn: asyncpg.Connection, call: Call) -> asyncpg.Record:
    row = await conn.fetchrow(sql.SELECT_CONVERSATION, call.tenant_id, call.id(what="conversation"))
    if row is None:
        raise not_found("conversation")
    return row


async def get_conversation(call: Call) -> Reply:
    async with call.db() as conn:
        return Reply(ConversationOut(**dict(await _conversation(conn, call))))


async def transcript(call: Call) -> Reply:
    q: PageQuery = call.query
    at, last = decode_cursor(q.cursor) or (None, None)
    async with call.db() as conn:
        row = await _conversation(conn, call)
        rows = await conn.fetch(sql.SELECT_MESSAGES, call.tenant_id, row["id"], at, last, q.limit)
    items = [MessageOut(**{k: r[k] for k in r.keys() if k != "payload"}) for r in rows]  # noqa: SIM118
    cursor = encode_cursor(items[-1].created_at, items[-1].id) if len(items) == q.limit else None
    return Reply(MessagePage(items=items, next_cursor=cursor))


def _fallback_target(channel_type: str, key: str) -> dict[str, Any]:
    """Where to answer when no inbound message recorded it (older rows): from the conversation key."""
    head, _, thread = key.partition(":")
    if channel_type == ChannelType.TELEGRAM:
        return {"chat_id": int(head) if head.lstrip("-").isdigit() else head, **({"message_thread_id": int(thread)}
                if thread.isdigit() else {})}  # fmt: skip
    if channel_type == ChannelType.SLACK:
        return {"channel": head, **({"thread_ts": thread} if thread else {})}
    return {}


async def _send(call: Call, row: asyncpg.Record, command: ConversationCommand, message_id: str) -> None:
    try:
        await call.request.app[BROKER].send_command(command, message_id, row["id"])
    except BrokerUnavailable as exc:
        raise ApiError(503, "unavailable", str(exc)) from None


async def reply(call: Call) -> Reply:
    body: AgentReplyIn = call.model(AgentReplyIn)
    async with call.db() as conn:
        row = await _conversation(conn, call)
        if row["status"] == "closed":
            raise ApiError(409, "closed", "the conversation is closed")
        target = await conn.fetchval(sql.SELECT_REPLY_TARGET, call.tenant_id, row["id"])
        target = {k: v for k, v in (target or _fallback_target(row["channel_type"], row["external_key"])).items()
                  if k != "callback_query_id"}  # fmt: skip
        # An Idempotency-Key makes a retried request the same message, sent once.
        key = call.request.headers.get("Idempotency-Key")
        message_id = str(stable_id(call.tenant_id, row["id"], "agent-reply", key) if key else uuid.uuid4())
        agent = body.agent or call.principal.name or call.principal.prefix
        command = ConversationCommand(
            row["channel_id"], call.tenant_id, row["external_key"], "reply", time.time(), text=body.text,
            message_id=message_id, sender=f"agent:{agent}", channel_type=row["channel_type"], reply_to=target,
        )  # fmt: skip
        await call.audit(conn, "reply", "conversations", row["id"], None, {"message_id": message_id})
        await _send(call, row, command, message_id)  # inside the transaction: no audit row for a 503
    return Reply(CommandOut(id=message_id, conversation_id=row["id"], action="reply"), 202)


def _status_command(action: str) -> Any:
    async def command(call: Call) -> Reply:
        async with call.db() as conn:
            row = await _conversation(conn, call)
            issued = time.time()
            message_id = f"{row['id']}:{action}:{issued}"
            cmd = ConversationCommand(row["channel_id"], call.tenant_id, row["external_key"], action, issued)
            await call.audit(conn, action, "conversations", row["id"], {"status": row["status"]}, None)
            await _send(call, row, cmd, message_id)
        return Reply(CommandOut(id=message_id, conversation_id=row["id"], action=action), 202)

    command.__name__ = action
    return command


# --- contacts -------------------------------------------------------------------------------------------


async def set_opt_out(conn: asyncpg.Connection, tenant_id: str, contact: str, opted_out: bool) -> None:
    """The contact's marketing opt-out, written as STOP words and WhatsApp user_preferences write it
    (the latest change wins), so the scheduler's claim-time check obeys it."""
    now = datetime.now(UTC)
    await conn.execute(UPSERT_PREFERENCES, [contact], [tenant_id], [opted_out], ["api"], [now])


def _contact_out(row: asyncpg.Record) -> ContactOut:
    data = {k: row[k] for k in row.keys() if k != "opt_out_changed_at"}  # noqa: SIM118
    return ContactOut(**data, opted_out_at=row["opt_out_changed_at"] if row["opted_out"] else None)


async def list_contacts(call: Call) -> Reply:
    q: ContactQuery = call.query
    at, last = decode_cursor(q.cursor) or (None, None)
    async with call.db() as conn:
        rows = await conn.fetch(sql.SELECT_CONTACTS, call.tenant_id, q.channel_id, q.tag, at, last, q.limit)
    items = [_contact_out(r) for r in rows]
    cursor = encode_cursor(items[-1].last_seen_at, items[-1].id) if len(items) == q.limit else None
    return Reply(ContactPage(items=items, next_cursor=cursor))


async def get_contact(call: Call) -> Reply:
    async with call.db() as conn:
        row = await conn.fetchrow(sql.SELECT_CONTACT, call.tenant_id, call.id(what="contact"))
    if row is None:
        raise not_found("contact")
    return Reply(_contact_out(row))


async def patch_contact(call: Call) -> Reply:
    """Tags and opt-out are written at once (the opt-out is the marketing opt-out the recovery
    scheduler checks at claim time); attributes go through each of the contact's conversations'
    shards (the workers hold them), so the answer is 202 when they are given."""
    patch: ContactPatch = call.model(ContactPatch)
    cid = call.id(what="contact")
    async with call.db() as conn:
        if await conn.fetchrow(sql.SELECT_CONTACT, call.tenant_id, cid) is None:
            raise not_found("contact")
        if patch.tags is not None:
            await conn.execute(sql.UPDATE_CONTACT_TAGS, call.tenant_id, cid, patch.tags)
        if patch.opted_out is not None:
            await set_opt_out(conn, call.tenant_id, cid, patch.opted_out)
        await call.audit(conn, "update", "contacts", cid, None, {"id": cid})
        if patch.attributes:
            conversations = await conn.fetch(sql.SELECT_CONTACT_CONVERSATIONS, call.tenant_id, cid,
                                             MAX_CONTACT_CONVERSATIONS)  # fmt: skip
            issued = time.time()
            for c in conversations:
                command = ConversationCommand(c["channel_id"], call.tenant_id, c["external_key"], "set_attributes",
                                              issued, attributes=patch.attributes)  # fmt: skip
                await _send(call, c, command, f"{c['id']}:set_attributes:{issued}")
        row = await conn.fetchrow(sql.SELECT_CONTACT, call.tenant_id, cid)
    return Reply(_contact_out(row), 202 if patch.attributes else 200)


ROUTES = [
    Route("GET", "/conversations", list_conversations, "List conversations, most recent activity first",
          "conversations", READ, query=ConversationQuery, response=ConversationPage),
    Route("GET", "/conversations/{id}", get_conversation, "Get a conversation", "conversations", READ,
          response=ConversationOut, errors=(404,)),
    Route("GET", "/conversations/{id}/messages", transcript, "The conversation's transcript, oldest first",
          "conversations", READ, query=PageQuery, response=MessagePage, errors=(404,)),
    Route("POST", "/conversations/{id}/messages", reply, "Send an agent's reply (in order with the bot's)",
          "conversations", AGENT, body=AgentReplyIn, response=CommandOut, status=202, errors=(404, 409, 503)),
    Route("POST", "/conversations/{id}/handback", _status_command("handback"), "Give the conversation back to the bot",
          "conversations", AGENT, response=CommandOut, status=202, errors=(404, 503)),
    Route("POST", "/conversations/{id}/close", _status_command("close"), "Close the conversation", "conversations",
          AGENT, response=CommandOut, status=202, errors=(404, 503)),
    Route("GET", "/handoff-queue", handoff_queue, "Conversations waiting for a human, longest-waiting first",
          "conversations", READ, query=PageQuery, response=ConversationPage),
    Route("GET", "/contacts", list_contacts, "List contacts", "contacts", READ, query=ContactQuery,
          response=ContactPage),
    Route("GET", "/contacts/{id}", get_contact, "Get a contact", "contacts", READ, response=ContactOut,
          errors=(404,)),
    Route("PATCH", "/contacts/{id}", patch_contact, "Change a contact's tags, opt-out or attributes", "contacts",
          ("write", "agent"), body=ContactPatch, response=ContactOut, errors=(404, 503)),
]  # fmt: skip
