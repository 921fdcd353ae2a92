"""What one handled message writes, as rows staged into the open flush: pure, no I/O, no await.

Staging is synchronous so that every effect of a message lands in the same transaction; ids are
stable (uuid5 of the platform's ids), so a redelivered message stages the very same rows and the
flush's ON CONFLICT makes it converge.
"""

from __future__ import annotations

from typing import Any

from engine.models import (
    COMMAND_STATUS,
    ChannelType,
    Contact,
    Conversation,
    ConversationCommand,
    InboundEvent,
    MessageType,
    OutboundMessage,
    Outcome,
    stable_key,
)
from engine.store.messages import EventKey, FlushRows, HistoryRow
from engine.values import utc


def stage_message(
    rows: FlushRows, event: InboundEvent, outcome: Outcome, conversation: Conversation, contact: Contact, now: float
) -> None:
    """Stage the inbound row, the replies (history + outbox), the tool runs and the new state."""
    key = (event.channel_id, event.event_id)
    payload = _payload(event)
    if outcome.errors:  # e.g. a flow stopped by the step bound: kept with the message that caused it
        payload["errors"] = outcome.errors
    rows.events[key] = conversation.id
    rows.history.append((key, HistoryRow(
        stable_key(event.channel_id, event.event_id, "in"), event.tenant_id, event.channel_id,
        conversation.id, "inbound", event.contact_key, event.type.value, event.text, payload, event.event_id,
        utc(now),
    )))  # fmt: skip
    replies = [
        OutboundMessage(
            id=stable_key(event.channel_id, event.event_id, "reply", i),
            # After the inbound row, in reply order, and still so once rounded to the microseconds PostgreSQL
            # keeps (a float epoch is only good to about 0.2 us, so 1 us apart could round to the same value).
            created_at=now + (i + 1) * 1e-5,
            tenant_id=event.tenant_id,
            channel_id=event.channel_id,
            channel_type=event.channel_type,
            conversation_id=conversation.id,
            conversation_key=event.conversation_key,
            text=reply.text,
            buttons=reply.buttons,
            reply_to=event.reply_to,
        )
        for i, reply in enumerate(outcome.replies)
    ]
    if event.type is MessageType.BUTTON and "callback_query_id" in event.reply_to:
        replies.insert(0, _answer_callback(event, conversation.id, now))
    for reply in replies:
        history_id = None
        if reply.kind == "message":
            history_id = stable_key(reply.id, "history")
            rows.history.append((key, HistoryRow(
                history_id, reply.tenant_id, reply.channel_id, conversation.id, "outbound", "bot", "text",
                reply.text, {"buttons": [b.id for b in reply.buttons]}, None, utc(reply.created_at),
            )))  # fmt: skip
        rows.outbound.append((key, reply, history_id))
    for tool_run in outcome.tool_runs:
        rows.tool_runs.append((key, event.tenant_id, conversation.id, tool_run))
    rows.stage_state(key, conversation, contact, utc(now))


def stage_command(
    rows: FlushRows,
    key: EventKey,
    command: ConversationCommand,
    conversation: Conversation,
    contact: Contact,
    now: float,
) -> None:
    """An operator's or agent's command, its rows tagged with `key` (command_key() for a reply):
    handback / close change the status (close also leaves the flow); set_attributes merges into the
    contact's attributes (None removes a key); reply stages an agent's message like a bot reply, with
    sender "agent:<name>", and the conversation becomes "human" (the agent has it; the bot stays
    silent until handback)."""
    if command.action in COMMAND_STATUS:
        conversation.status = COMMAND_STATUS[command.action]
        if command.action == "close":
            conversation.flow_id = conversation.node_id = conversation.flow_version = None
    elif command.action == "set_attributes" and command.attributes is not None:
        attributes = dict(contact.attributes)
        for name, value in command.attributes.items():
            if value is None:
                attributes.pop(name, None)
            else:
                attributes[name] = value
        contact.attributes = attributes
    elif command_key(command) == key and command.text is not None:
        _stage_agent_reply(rows, key, command, conversation, now)
        conversation.status = "human"
    rows.stage_state(key, conversation, contact, utc(now))


def command_key(command: ConversationCommand) -> EventKey | None:
    """The idempotency-ledger key of a command that must apply once (an agent's reply), else None."""
    if command.action == "reply" and command.message_id:
        return (command.channel_id, f"agent:{command.message_id}")
    return None


def _stage_agent_reply(
    rows: FlushRows, key: EventKey, command: ConversationCommand, conversation: Conversation, now: float
) -> None:
    reply = OutboundMessage(
        id=str(command.message_id),
        created_at=now,
        tenant_id=command.tenant_id,
        channel_id=command.channel_id,
        channel_type=ChannelType(command.channel_type or ChannelType.WEB),
        conversation_id=conversation.id,
        conversation_key=command.conversation_key,
        text=str(command.text),
        reply_to=command.reply_to,
    )
    history_id = stable_key(reply.id, "history")
    rows.events[key] = conversation.id  # the ledger: a redelivered command is found and sends nothing
    rows.history.append((key, HistoryRow(
        history_id, reply.tenant_id, reply.channel_id, conversation.id, "outbound", command.sender or "agent",
        "text", reply.text, {"agent": True}, None, utc(now),
    )))  # fmt: skip
    rows.outbound.append((key, reply, history_id))


def _payload(event: InboundEvent) -> dict[str, Any]:
    # reply_to is kept so that an agent's later reply reaches the same chat and thread (admin API).
    payload: dict[str, Any] = {"raw": event.raw, "reply_to": event.reply_to}
    if event.payload is not None:
        payload["payload"] = event.payload
    if event.media is not None:
        payload["media"] = event.media
    return payload


def _answer_callback(event: InboundEvent, conversation_id: str, now: float) -> OutboundMessage:
    return OutboundMessage(
        id=stable_key(event.channel_id, event.event_id, "answer_callback"),
        created_at=now,
        tenant_id=event.tenant_id,
        channel_id=event.channel_id,
        channel_type=event.channel_type,
        conversation_id=conversation_id,
        conversation_key=event.conversation_key,
        text="",
        reply_to=event.reply_to,
        kind="answer_callback",
    )
