"""Connections, channels and message bodies on the bus: what every process needs to talk to it."""

from __future__ import annotations

from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection

from engine.bus import envelope
from engine.models import OutboundMessage

# Set only by the committer of a replies message (the worker, right after the commit that created its
# rows): the message is the one copy of those replies. A copy of it (retried, set aside, replayed)
# never carries the header, nor does the sweeper's re-publish; a redelivery says it is one.
FIRST_COPY_HEADER = "x-first-copy"


async def connect(url: str, name: str) -> AbstractRobustConnection:
    """A robust connection: it reconnects by itself and re-declares what its channels declared."""
    return await aio_pika.connect_robust(url, client_properties={"connection_name": name})


async def open_channel(connection: AbstractRobustConnection, prefetch: int = 0) -> AbstractRobustChannel:
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    if prefetch:
        await channel.set_qos(prefetch_count=prefetch)
    return channel


def _persistent(
    body: bytes, message_id: str, correlation_id: str, headers: dict[str, Any] | None = None
) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        content_type=envelope.CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id,
        correlation_id=correlation_id,
        headers=headers,
    )


def make_message(item: envelope.Item, *, message_id: str, correlation_id: str) -> aio_pika.Message:
    return _persistent(envelope.encode(item), message_id, correlation_id)


def events_message(bodies: list[bytes], message_id: str, correlation_id: str) -> aio_pika.Message:
    """One persistent message carrying one or several encoded inbound items (envelope.join_events)."""
    return _persistent(envelope.join_events(bodies), message_id, correlation_id)


def replies_message(replies: list[OutboundMessage], *, first_copy: bool = False) -> aio_pika.Message:
    """One persistent message carrying several replies (envelope kind "replies"). first_copy: published
    once, by the commit that created their rows (FIRST_COPY_HEADER)."""
    headers = {FIRST_COPY_HEADER: True} if first_copy else None
    return _persistent(envelope.encode_replies(replies), replies[0].id, replies[0].conversation_id, headers)


def is_first_copy(message: AbstractIncomingMessage) -> bool:
    """The committer's own publish of a replies message, delivered for the first time."""
    return bool(message.headers and message.headers.get(FIRST_COPY_HEADER)) and not message.redelivered


def copy_of(message: AbstractIncomingMessage, headers: dict[str, Any], body: bytes | None = None) -> aio_pika.Message:
    """A persistent copy of a received message with other headers (and another body): to retry, set
    aside or replay it. A copy is never a first copy."""
    return aio_pika.Message(
        message.body if body is None else body,
        content_type=message.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        headers={k: v for k, v in headers.items() if k != FIRST_COPY_HEADER},
    )
