"""The writes a worker collects from many messages, flushed together in one transaction.

Every row is tagged with the inbound event that caused it, so that if the idempotency ledger turns
out to hold the event already (a late duplicate) the flush can leave that event's rows out.
Snapshots are taken when a message is staged: later messages of the same conversation mutate the
live state, but each staged row must hold the state as it was after its own message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from engine.models import Contact, Conversation, OutboundMessage, StatusEvent, ToolRun

EventKey = tuple[str, str]  # (channel_id, event_id)


def _json(value: object) -> str:
    """Snapshot as JSON text: it freezes the value now, and it is how the flush passes jsonb."""
    return orjson.dumps(value).decode()


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


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
class Batch:
    started: float = field(default_factory=time.monotonic)  # when the batch was opened
    acks: list[tuple[int, Any, Any]] = field(default_factory=list)  # (shard, message, state entry)
    events: dict[EventKey, str] = field(default_factory=dict)  # event -> conversation id
    contacts: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    conversations: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    history: list[tuple[EventKey, HistoryRow]] = field(default_factory=list)
    outbound: list[tuple[EventKey, OutboundMessage, str | None]] = field(default_factory=list)  # + history id
    tool_runs: list[tuple[EventKey, str, str, ToolRun]] = field(default_factory=list)  # tenant, conv
    statuses: list[StatusEvent] = field(default_factory=list)
    messages: int = 0  # inbound messages whose effects are staged here

    def __len__(self) -> int:
        return len(self.acks)

    def stage_state(self, conversation: Conversation, contact: Contact, at: datetime) -> None:
        self.contacts[contact.id] = (
            contact.id,
            contact.tenant_id,
            contact.channel_id,
            contact.key,
            contact.name,
            _json(contact.attributes),
            at,
        )
        self.conversations[conversation.id] = (
            conversation.id,
            conversation.tenant_id,
            conversation.channel_id,
            conversation.contact_id,
            conversation.key,
            conversation.bot_id,
            conversation.status,
            conversation.flow_id,
            conversation.flow_version,
            conversation.node_id,
            _json(conversation.variables),
            _json(conversation.tags),
            at,
        )
