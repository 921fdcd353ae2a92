"""Operators' and agents' commands for one conversation, applied by the worker that owns it, in the
conversation's lane, so each lands in order with the conversation's messages.

    handback / close   the conversation's status (close also leaves its flow)
    reply              an agent's message: a message_history row (sender "agent:<name>") and a reply
                       for the sender, staged like the bot's; the conversation becomes "human" (the
                       agent has it; the bot stays silent until handback)
    set_attributes     merged into the contact's attributes (the worker's copy is the truth)
"""

from __future__ import annotations

from engine.batch import Batch, HistoryRow, utc
from engine.models import COMMAND_STATUS, ChannelType, ConversationCommand, OutboundMessage, stable_id
from engine.state import Entry


def event_id(command: ConversationCommand) -> str | None:
    """The ledger key of a command that must not apply twice (a reply), else None."""
    return f"agent:{command.message_id}" if command.action == "reply" and command.message_id else None


def apply(batch: Batch, entry: Entry, command: ConversationCommand, now: float) -> bool:
    """Change the conversation (and stage a reply) in place; the caller stages the state. False for
    a command already applied (a redelivered reply) or one this engine does not know."""
    conversation = entry.conversation
    if command.action in COMMAND_STATUS:
        conversation.status = COMMAND_STATUS[command.action]
        if command.action == "close":
            conversation.flow_id = conversation.node_id = conversation.flow_version = None
        return True
    if command.action == "set_attributes" and command.attributes is not None:
        attributes = dict(entry.contact.attributes)
        for name, value in command.attributes.items():
            if value is None:
                attributes.pop(name, None)
            else:
                attributes[name] = value
        entry.contact.attributes = attributes
        return True
    key = event_id(command)
    if key is None or command.text is None or entry.seen(key):
        return False
    reply = OutboundMessage(
        id=str(command.message_id),
        created_at=now,
        tenant_id=command.tenant_id,
        channel_id=command.channel_id,
        channel_type=ChannelType(command.channel_type or "web"),
        conversation_id=conversation.id,
        conversation_key=command.conversation_key,
        text=command.text,
        reply_to=command.reply_to,
    )
    ledger = (command.channel_id, key)
    history_id = str(stable_id(reply.id, "history"))
    batch.events[ledger] = conversation.id  # the idempotency ledger catches a late duplicate too
    batch.history.append((ledger, HistoryRow(
        history_id, reply.tenant_id, reply.channel_id, conversation.id, "outbound", command.sender or "agent",
        "text", reply.text, {"agent": True}, None, utc(now),
    )))  # fmt: skip
    batch.outbound.append((ledger, reply, history_id))
    conversation.status = "human"
    entry.remember(key)
    return True
