"""Loading one conversation's state (and its contact) when a worker first sees it; finding the
conversation an operator names."""

from __future__ import annotations

from typing import NamedTuple

import asyncpg

from engine.models import Contact, Conversation

SELECT_CONVERSATION = """
SELECT id::text, tenant_id::text, channel_id::text, contact_id::text, external_key, bot_id::text,
       status, flow_id::text, flow_version, node_id, variables, tags
FROM conversations WHERE id = $1
"""
SELECT_CONTACT = """
SELECT id::text, tenant_id::text, channel_id::text, external_id, name, attributes
FROM channel_contacts WHERE id = $1
"""
# The conversation's most recent event ids: a redelivery of something the previous owner of the
# shard committed (but did not ack) is recognised before it is processed again.
SELECT_RECENT_EVENTS = """
SELECT event_id FROM inbound_events WHERE conversation_id = $1 ORDER BY processed_at DESC LIMIT $2
"""


# The same three for many conversations at once (the worker joins the loads of concurrent lanes).
SELECT_CONVERSATIONS = SELECT_CONVERSATION.replace("WHERE id = $1", "WHERE id = ANY($1::uuid[])")
SELECT_CONTACTS = SELECT_CONTACT.replace("WHERE id = $1", "WHERE id = ANY($1::uuid[])")
SELECT_RECENT_EVENTS_MANY = """
SELECT c.id::text AS conversation_id, e.event_id
FROM unnest($1::uuid[]) AS c(id)
CROSS JOIN LATERAL (SELECT event_id, processed_at FROM inbound_events
                    WHERE conversation_id = c.id ORDER BY processed_at DESC LIMIT $2) AS e
"""


class Stored(NamedTuple):
    """What is stored of one conversation and its contact (None: not stored yet), and the
    conversation's most recent event ids, newest first."""

    conversation: Conversation | None
    contact: Contact | None
    recent: list[str]


async def load_many(conn: asyncpg.Connection, keys: list[tuple[str, str]], recent: int) -> list[Stored]:
    """For each (conversation id, contact id): what is stored, in three statements for all of them."""
    conversations = {r["id"]: _conversation(r) for r in await conn.fetch(SELECT_CONVERSATIONS, [k[0] for k in keys])}
    contacts = {r["id"]: _contact(r) for r in await conn.fetch(SELECT_CONTACTS, [k[1] for k in keys])}
    events: dict[str, list[str]] = {}
    if conversations:
        for r in await conn.fetch(SELECT_RECENT_EVENTS_MANY, list(conversations), recent):
            events.setdefault(r["conversation_id"], []).append(r["event_id"])
    return [Stored(conversations.get(cid), contacts.get(kid), events.get(cid, [])) for cid, kid in keys]


async def load_conversation(conn: asyncpg.Connection, conversation_id: str) -> Conversation | None:
    row = await conn.fetchrow(SELECT_CONVERSATION, conversation_id)
    return None if row is None else _conversation(row)


def _conversation(row: asyncpg.Record) -> Conversation:
    return Conversation(
        id=row["id"],
        tenant_id=row["tenant_id"],
        channel_id=row["channel_id"],
        contact_id=row["contact_id"],
        key=row["external_key"],
        bot_id=row["bot_id"],
        status=row["status"],
        flow_id=row["flow_id"],
        flow_version=row["flow_version"],
        node_id=row["node_id"],
        variables=row["variables"],
        tags=list(row["tags"]),
        is_new=False,
    )


async def load_contact(conn: asyncpg.Connection, contact_id: str) -> Contact | None:
    row = await conn.fetchrow(SELECT_CONTACT, contact_id)
    return None if row is None else _contact(row)


def _contact(row: asyncpg.Record) -> Contact:
    return Contact(
        id=row["id"],
        tenant_id=row["tenant_id"],
        channel_id=row["channel_id"],
        key=row["external_id"],
        name=row["name"],
        attributes=row["attributes"],
    )


async def recent_event_ids(conn: asyncpg.Connection, conversation_id: str, limit: int) -> list[str]:
    return [r["event_id"] for r in await conn.fetch(SELECT_RECENT_EVENTS, conversation_id, limit)]


SELECT_CONVERSATION_ROUTE = """
SELECT tenant_id::text, channel_id::text, external_key, status FROM conversations WHERE id = $1
"""


class ConversationRoute(NamedTuple):
    """What it takes to reach a conversation through its shard."""

    tenant_id: str
    channel_id: str
    external_key: str
    status: str


async def find(pool: asyncpg.Pool, conversation_id: str) -> ConversationRoute | None:
    """The conversation with this id, or None (also for a string that is not a uuid)."""
    try:
        row = await pool.fetchrow(SELECT_CONVERSATION_ROUTE, conversation_id)
    except asyncpg.DataError:
        return None
    return None if row is None else ConversationRoute(*row)
