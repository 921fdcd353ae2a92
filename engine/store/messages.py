"""The worker's batched flush: one transaction, one round trip per table, for many messages.

Callers hold the transaction. Everything is written with unnest() arrays (a few round trips per
batch, whatever its size), and every insert is idempotent so a redelivered batch converges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from engine.models import STATUS_RANK, Contact, Conversation, OutboundMessage, StatusEvent, ToolRun
from engine.store import columns, recovery
from engine.values import json_text, utc

EventKey = tuple[str, str]  # (channel_id, event_id)

UPSERT_CONTACTS = """
INSERT INTO channel_contacts (id, tenant_id, channel_id, external_id, name, attributes, last_seen_at)
SELECT id, tenant_id, channel_id, external_id, name, attributes::jsonb, last_seen_at
FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::timestamptz[])
     AS u(id, tenant_id, channel_id, external_id, name, attributes, last_seen_at)
ON CONFLICT (id) DO UPDATE SET
    name = coalesce(EXCLUDED.name, channel_contacts.name),
    attributes = EXCLUDED.attributes,
    last_seen_at = greatest(channel_contacts.last_seen_at, EXCLUDED.last_seen_at)
RETURNING id::text, recovery_queued_at
"""
UPSERT_CONVERSATIONS = """
INSERT INTO conversations (id, tenant_id, channel_id, contact_id, external_key, bot_id, status, flow_id,
                           flow_version, node_id, variables, tags, last_message_at)
SELECT u.id, u.tenant_id, u.channel_id, u.contact_id, u.external_key, u.bot_id, u.status, u.flow_id,
       u.flow_version, u.node_id, u.variables::jsonb, array(SELECT jsonb_array_elements_text(u.tags::jsonb)),
       u.last_message_at
FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::uuid[], $7::text[],
            $8::uuid[], $9::int[], $10::text[], $11::text[], $12::text[], $13::timestamptz[])
     AS u(id, tenant_id, channel_id, contact_id, external_key, bot_id, status, flow_id, flow_version,
          node_id, variables, tags, last_message_at)
ON CONFLICT (id) DO UPDATE SET
    bot_id = EXCLUDED.bot_id, status = EXCLUDED.status, flow_id = EXCLUDED.flow_id,
    flow_version = EXCLUDED.flow_version, node_id = EXCLUDED.node_id, variables = EXCLUDED.variables,
    tags = EXCLUDED.tags, last_message_at = greatest(conversations.last_message_at, EXCLUDED.last_message_at)
"""
INSERT_EVENTS = """
INSERT INTO inbound_events (channel_id, event_id, conversation_id)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[])
ON CONFLICT DO NOTHING
RETURNING channel_id::text, event_id
"""
INSERT_HISTORY = """
INSERT INTO message_history (id, tenant_id, channel_id, conversation_id, direction, sender, message_type,
                             text, payload, external_id, created_at)
SELECT id, tenant_id, channel_id, conversation_id, direction, sender, message_type, text, payload::jsonb,
       external_id, created_at
FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::text[], $11::timestamptz[])
     AS u(id, tenant_id, channel_id, conversation_id, direction, sender, message_type, text, payload,
          external_id, created_at)
ON CONFLICT DO NOTHING
"""
INSERT_CHANNEL_MESSAGES = """
INSERT INTO channel_messages (id, tenant_id, channel_id, conversation_id, message_history_id, body,
                              created_at)
SELECT id, tenant_id, channel_id, conversation_id, message_history_id, body::jsonb, created_at
FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::text[], $7::timestamptz[])
     AS u(id, tenant_id, channel_id, conversation_id, message_history_id, body, created_at)
ON CONFLICT DO NOTHING
"""
INSERT_TOOL_RUNS = """
INSERT INTO tool_executions (id, tenant_id, conversation_id, tool_id, tool_name, status, attempts, duration_ms,
                             request, response, error, idempotency_key, created_at)
SELECT id, tenant_id, conversation_id, tool_id, tool_name, status, attempts, duration_ms, request::jsonb,
       response::jsonb, error, idempotency_key, created_at
FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::int[], $8::float8[],
            $9::text[], $10::text[], $11::text[], $12::text[], $13::timestamptz[])
     AS u(id, tenant_id, conversation_id, tool_id, tool_name, status, attempts, duration_ms, request, response,
          error, idempotency_key, created_at)
ON CONFLICT (id) DO NOTHING
"""
# Statuses only move forward (sent < delivered < read); failed is final. Platforms deliver them
# out of order, so a 'delivered' that arrives after 'read' changes nothing. A receipt for a message
# whose platform id the sender has not stored yet is kept in pending_receipts (deliveries.mark_sent_many
# applies it).
APPLY_STATUSES = """
WITH u AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[])
         AS u(channel_id, platform_message_id, status, at, error_code, error)
), applied AS (
    UPDATE channel_messages m SET
        status = u.status,
        updated_at = now(),
        sent_at = CASE WHEN u.status = 'sent' THEN coalesce(m.sent_at, u.at) ELSE m.sent_at END,
        delivered_at = CASE WHEN u.status = 'delivered' THEN u.at ELSE m.delivered_at END,
        read_at = CASE WHEN u.status = 'read' THEN u.at ELSE m.read_at END,
        failed_at = CASE WHEN u.status = 'failed' THEN u.at ELSE m.failed_at END,
        error_code = coalesce(u.error_code, m.error_code),
        error = coalesce(u.error, m.error)
    FROM u
    WHERE m.channel_id = u.channel_id AND m.platform_message_id = u.platform_message_id
      AND m.status <> 'failed' AND delivery_rank(u.status) > delivery_rank(m.status)
    RETURNING m.id
)
INSERT INTO pending_receipts (channel_id, platform_message_id, status, at, error_code, error)
SELECT u.channel_id, u.platform_message_id, u.status, u.at, u.error_code, u.error FROM u
WHERE NOT EXISTS (SELECT 1 FROM channel_messages m
                  WHERE m.channel_id = u.channel_id AND m.platform_message_id = u.platform_message_id)
ON CONFLICT DO NOTHING
"""


@dataclass(slots=True)
class HistoryRow:
    id: str
    tenant_id: str
    channel_id: str
    conversation_id: str
    direction: str
    sender: str
    message_type: str
    text: str | None
    payload: dict[str, Any]
    external_id: str | None
    created_at: datetime


@dataclass(slots=True)
class FlushRows:
    """Every row one flush writes, each tagged with the key of the delivery that caused it (an inbound
    event's (channel_id, event_id), or another unique key for statuses and commands): a late
    duplicate found in the ledger has its rows left out, and a batch the database refuses can be
    split down to the deliveries whose rows it refuses (subset()).

    State is snapshotted when staged: later messages of the same conversation mutate the live
    objects, but each staged row must hold the state as it was after its own message."""

    events: dict[EventKey, str] = field(default_factory=dict)  # event -> conversation id
    states: list[tuple[EventKey, tuple[Any, ...], tuple[Any, ...]]] = field(default_factory=list)  # contact, conv
    history: list[tuple[EventKey, HistoryRow]] = field(default_factory=list)
    outbound: list[tuple[EventKey, OutboundMessage, str | None]] = field(default_factory=list)  # + history id
    tool_runs: list[tuple[EventKey, str, str, ToolRun]] = field(default_factory=list)  # tenant, conversation
    statuses: list[tuple[EventKey, StatusEvent]] = field(default_factory=list)
    # Recovery (engine.recovery.hooks): inbound messages as (key, contact id, at), to mark replies; and
    # marketing opt-out changes as (key, contact id, tenant id, opted out, source, at).
    recovery_replies: list[tuple[EventKey, str, datetime]] = field(default_factory=list)
    preferences: list[tuple[EventKey, str, str, bool, str, datetime]] = field(default_factory=list)

    def stage_state(self, key: EventKey, conversation: Conversation, contact: Contact, at: datetime) -> None:
        contact_row = (
            contact.id, contact.tenant_id, contact.channel_id, contact.key, contact.name,
            json_text(contact.attributes), at,
        )  # fmt: skip
        conversation_row = (
            conversation.id, conversation.tenant_id, conversation.channel_id, conversation.contact_id,
            conversation.key, conversation.bot_id, conversation.status, conversation.flow_id,
            conversation.flow_version, conversation.node_id, json_text(conversation.variables),
            json_text(conversation.tags), at,
        )  # fmt: skip
        self.states.append((key, contact_row, conversation_row))

    def subset(self, keys: set[EventKey]) -> FlushRows:
        """The rows of these deliveries only (each conversation's state: its last snapshot among them)."""
        return FlushRows(
            {k: v for k, v in self.events.items() if k in keys},
            [s for s in self.states if s[0] in keys],
            [h for h in self.history if h[0] in keys],
            [o for o in self.outbound if o[0] in keys],
            [r for r in self.tool_runs if r[0] in keys],
            [s for s in self.statuses if s[0] in keys],
            [r for r in self.recovery_replies if r[0] in keys],
            [p for p in self.preferences if p[0] in keys],
        )


async def flush(conn: asyncpg.Connection, batch: FlushRows) -> set[EventKey]:
    """Write the batch; returns the events found already in the ledger (late duplicates), whose
    message rows, replies, tool runs and state were left out. Must run inside the caller's transaction."""
    duplicates: set[EventKey] = set()
    if batch.events:
        keys = list(batch.events)
        inserted = await conn.fetch(
            INSERT_EVENTS, [k[0] for k in keys], [k[1] for k in keys], list(batch.events.values())
        )
        duplicates = set(keys) - {(r["channel_id"], r["event_id"]) for r in inserted}
    # The last snapshot of each contact and conversation, a duplicate's left out: its state is what
    # handling the event a second time made of it.
    states = [s for s in batch.states if s[0] not in duplicates]
    recovery_queued: dict[str, datetime | None] = {}
    if states:
        contacts = {row[0]: row for _, row, _ in states}
        conversations = {row[0]: row for _, _, row in states}
        upserted = await conn.fetch(UPSERT_CONTACTS, *columns(list(contacts.values()), 7))
        recovery_queued = {r["id"]: r["recovery_queued_at"] for r in upserted}
        await conn.execute(UPSERT_CONVERSATIONS, *columns(list(conversations.values()), 13))
    history = [
        (h.id, h.tenant_id, h.channel_id, h.conversation_id, h.direction, h.sender, h.message_type, h.text,
         json_text(h.payload), h.external_id, h.created_at)
        for key, h in batch.history
        if key not in duplicates
    ]  # fmt: skip
    if history:
        await conn.execute(INSERT_HISTORY, *columns(history, 11))
    outbound = [
        (m.id, m.tenant_id, m.channel_id, m.conversation_id, history_id, json_text(m), utc(m.created_at))
        for key, m, history_id in batch.outbound
        if key not in duplicates
    ]
    if outbound:
        await conn.execute(INSERT_CHANNEL_MESSAGES, *columns(outbound, 7))
    tool_runs = [
        (r.id, tenant, conversation, r.tool_id, r.tool_name, r.status, r.attempts, r.duration_ms, json_text(r.request),
         None if r.response is None else json_text(r.response), r.error, r.idempotency_key,
         utc(r.started_at) if r.started_at else datetime.now(UTC))
        for key, tenant, conversation, r in batch.tool_runs
        if key not in duplicates
    ]  # fmt: skip
    if tool_runs:
        await conn.execute(INSERT_TOOL_RUNS, *columns(tool_runs, 13))
    if batch.statuses:
        await apply_statuses(conn, [s for _, s in batch.statuses])
    await recovery.flush_worker_effects(
        conn,
        [(contact, at) for key, contact, at in batch.recovery_replies if key not in duplicates],
        recovery_queued,
        {
            c: (tenant, out, source, at)
            for key, c, tenant, out, source, at in batch.preferences
            if key not in duplicates
        },
    )
    return duplicates


async def apply_statuses(conn: asyncpg.Connection, statuses: list[StatusEvent]) -> None:
    furthest: dict[tuple[str, str], StatusEvent] = {}
    for s in statuses:  # several receipts of one message in a batch: keep the furthest
        key = (s.channel_id, s.platform_message_id)
        if key not in furthest or STATUS_RANK[s.status] > STATUS_RANK[furthest[key].status]:
            furthest[key] = s
    rows = [
        (s.channel_id, s.platform_message_id, s.status.value, utc(s.timestamp), s.error_code, s.error)
        for s in furthest.values()
    ]
    await conn.execute(APPLY_STATUSES, *columns(rows, 6))
    await recovery.apply_receipts(conn, rows)
