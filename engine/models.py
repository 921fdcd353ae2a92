"""Internal types shared by the receivers, workers and senders.

Frozen slotted dataclasses and enums only: no I/O, no pydantic. Channel modules turn platform
payloads into these at the edge; everything behind the bus speaks only these types.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# Namespace for deterministic ids: the same platform object always maps to the same row id,
# so a redelivery or a race between two workers converges on one row instead of two.
ID_NAMESPACE = uuid.UUID("6f1c2b0e-4a8d-4f47-9a53-2f8d0f3c9b10")
_NAMESPACE_BYTES = ID_NAMESPACE.bytes


def stable_id(*parts: object) -> uuid.UUID:
    """A UUID derived from its parts (uuid5); equal parts give an equal id on every host."""
    return uuid.uuid5(ID_NAMESPACE, "\x1f".join(str(p) for p in parts))


def stable_key(*parts: object) -> str:
    """str(stable_id(*parts)), without the UUID object: the worker makes several per message."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join([str(p) for p in parts]).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # RFC 4122 version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # and its variant bits
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class ChannelType(StrEnum):
    WHATSAPP = "whatsapp"
    TELEGRAM = "telegram"
    SLACK = "slack"
    MESSENGER = "messenger"
    INSTAGRAM = "instagram"
    WEB = "web"


class MessageType(StrEnum):
    TEXT = "text"
    BUTTON = "button"  # a reply-button click, inline keyboard press, quick reply or postback
    MEDIA = "media"  # image, audio, video, document, sticker: see InboundEvent.media
    LOCATION = "location"
    CONTACTS = "contacts"
    REACTION = "reaction"
    UNSUPPORTED = "unsupported"


class DeliveryStatus(StrEnum):
    """Outbound delivery states. Order matters: a status never moves back (see RANK)."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"


# Monotonic rank of each status: an update only applies when it ranks higher. FAILED is final.
STATUS_RANK: dict[DeliveryStatus, int] = {
    DeliveryStatus.QUEUED: 0,
    DeliveryStatus.SENDING: 1,
    DeliveryStatus.SENT: 2,
    DeliveryStatus.DELIVERED: 3,
    DeliveryStatus.READ: 4,
    DeliveryStatus.FAILED: 9,
}


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """What a receiver or sender knows of one configured channel (secrets decrypted in memory)."""

    id: str
    tenant_id: str
    bot_id: str | None
    type: ChannelType
    external_id: str | None
    secrets: dict[str, str]
    config: dict[str, Any] = field(default_factory=dict)
    active: bool = True


@dataclass(frozen=True, slots=True)
class InboundEvent:
    """One normalized inbound message, as published to a shard queue.

    event_id is the platform's idempotency key, unique within the channel (Telegram update_id,
    WhatsApp wamid, Slack event_id, Meta mid). conversation_key identifies the conversation within
    the channel (chat id, BSUID, Slack channel + thread). reply_to holds what the sender needs to
    answer in place (chat id, thread ts, recipient id, callback query id, ...).
    """

    channel_id: str
    tenant_id: str
    channel_type: ChannelType
    event_id: str
    conversation_key: str
    contact_key: str
    type: MessageType
    timestamp: float
    text: str | None = None
    payload: str | None = None  # button / postback / quick reply payload
    contact_name: str | None = None
    contact_attributes: dict[str, Any] = field(default_factory=dict)
    media: dict[str, Any] | None = None
    reply_to: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def idempotency_key(self) -> str:
        return f"{self.channel_id}:{self.event_id}"


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """A platform's delivery receipt for a message we sent (WhatsApp statuses, ...)."""

    channel_id: str
    tenant_id: str
    platform_message_id: str
    status: DeliveryStatus
    timestamp: float
    conversation_key: str
    error_code: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ConversationCommand:
    """An operator's instruction for one conversation. It travels through the conversation's shard
    like a message, so the worker that owns the conversation applies it in order with its messages
    (and its in-memory state stays the truth)."""

    channel_id: str
    tenant_id: str
    conversation_key: str
    action: str  # "handback": status bot again (after a handoff) | "close" | "reply" | "set_attributes"
    # | engine.recovery.hooks.ACTIONS (recovery_flow, marketing_stop, marketing_resume)
    issued_at: float
    # "reply": an agent's message, sent after the messages before it (engine.worker.commands).
    text: str | None = None
    message_id: str | None = None  # its channel_messages id: a redelivered command sends nothing twice
    sender: str | None = None  # message_history.sender ("agent:<name>")
    channel_type: str | None = None
    reply_to: dict[str, Any] = field(default_factory=dict)
    # "set_attributes": merged into the contact's attributes (a None value removes the key).
    attributes: dict[str, Any] | None = None
    data: dict[str, Any] = field(default_factory=dict)  # recovery_flow: the flow a reply answers


COMMAND_STATUS = {"handback": "bot", "close": "closed"}


@dataclass(frozen=True, slots=True)
class Button:
    id: str
    title: str


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One reply for the sender: the canonical shape every channel module renders.

    id is the channel_messages row id, derived from the inbound event and the reply's position,
    so a redelivered inbound event produces the same id and nothing is sent twice.
    kind "message" is a chat message; "answer_callback" acknowledges a Telegram button press.
    """

    id: str
    created_at: float
    tenant_id: str
    channel_id: str
    channel_type: ChannelType
    conversation_id: str
    conversation_key: str
    text: str
    buttons: tuple[Button, ...] = ()
    reply_to: dict[str, Any] = field(default_factory=dict)
    kind: str = "message"
    template: dict[str, Any] | None = None  # a WhatsApp template send, in the Cloud API's shape
    recovery_message_id: str | None = None  # the recovery step this delivers (engine.recovery)


@dataclass(frozen=True, slots=True)
class SendResult:
    platform_message_id: str | None


class SendError(Exception):
    """A send the platform refused. retryable says whether trying again can succeed;
    retry_after (seconds) is the platform's own wait when it gave one (429, flood control)."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable
        self.retry_after = retry_after


# --- Per-conversation state, owned by the worker that owns the conversation's shard. ---------------
# Mutable on purpose: the brain updates them in place; the worker stages them for the batch flush.


@dataclass(slots=True)
class Contact:
    id: str
    tenant_id: str
    channel_id: str
    key: str  # the platform's user id
    name: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Conversation:
    id: str
    tenant_id: str
    channel_id: str
    contact_id: str
    key: str
    bot_id: str | None = None
    status: str = "bot"  # bot | human | closed
    flow_id: str | None = None
    flow_version: int | None = None
    node_id: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    is_new: bool = True  # no message of it has been committed yet


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    buttons: tuple[Button, ...] = ()


@dataclass(slots=True)
class ToolRun:
    """One tool call, written to tool_executions in the same batch as the message that caused it."""

    id: str
    tool_name: str
    status: str  # ok | error | timeout
    attempts: int
    duration_ms: float
    request: dict[str, Any]
    response: dict[str, Any] | None
    error: str | None
    tool_id: str | None = None
    # The tool_executions columns the worker could not know otherwise (added for the brain):
    tenant_id: str | None = None
    conversation_id: str | None = None
    idempotency_key: str | None = None  # the Idempotency-Key header sent (inbound event + step)
    started_at: float | None = None  # epoch seconds


@dataclass(slots=True)
class Outcome:
    """What handling one inbound message produced, besides the in-place state changes."""

    replies: list[Reply] = field(default_factory=list)
    tool_runs: list[ToolRun] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
