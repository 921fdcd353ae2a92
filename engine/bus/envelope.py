"""Bus message bodies: the internal types as orjson bytes with a version field.

Decoding is strict about the version so that a process never misreads a body written by a newer
engine; anything else that fails to decode is a poison message for the consumer to set aside.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from engine.models import (
    Button,
    ChannelType,
    ConversationCommand,
    DeliveryStatus,
    InboundEvent,
    MessageType,
    OutboundMessage,
    StatusEvent,
)

VERSION = 1
CONTENT_TYPE = "application/json"


class EnvelopeError(ValueError):
    """A body that is not a well-formed envelope of a version we read."""


Inbound = InboundEvent | StatusEvent | ConversationCommand  # what an inbound shard carries
Item = Inbound | OutboundMessage
KINDS: dict[type, str] = {
    InboundEvent: "inbound",
    StatusEvent: "status",
    OutboundMessage: "outbound",
    ConversationCommand: "command",
}


def encode(item: Item) -> bytes:
    kind = KINDS[type(item)]
    return orjson.dumps({"v": VERSION, "kind": kind, "data": item})


def encode_replies(replies: Sequence[OutboundMessage]) -> bytes:
    """Several replies in one body (kind "replies"): one broker message carries a flush's replies
    for one outbound queue."""
    return orjson.dumps({"v": VERSION, "kind": "replies", "data": replies})


def reply_from(data: dict[str, Any]) -> OutboundMessage:
    """A reply from its plain form (a body decoded, or channel_messages.body read back)."""
    data["channel_type"] = ChannelType(data["channel_type"])
    data["buttons"] = tuple(Button(**b) for b in data["buttons"])
    return OutboundMessage(**data)


def join_events(bodies: Sequence[bytes]) -> bytes:
    """Several encoded inbound items in one body (kind "events", a list of ordinary envelopes): the
    receiver's publish of what arrived for one shard while its previous publish was unconfirmed."""
    if len(bodies) == 1:
        return bodies[0]
    return b'{"v":%d,"kind":"events","data":[%b]}' % (VERSION, b",".join(bodies))


def decode_events(body: bytes) -> list[Inbound]:
    """The items of an inbound shard's body: kind "events" (a list of envelopes), or any single item
    but a reply (replies travel on the outbound shards); an events list must not be empty."""
    with _reading():
        kind, data = _opened(body)
        envelopes = [_checked(env) for env in data] if kind == "events" else [(kind, data)]
        if not envelopes:
            raise EnvelopeError("an events message without events")
        return [_inbound(*env) for env in envelopes]


def decode(body: bytes) -> Item:
    with _reading():
        kind, data = _opened(body)
        return reply_from(data) if kind == "outbound" else _inbound(kind, data)


def _inbound(kind: str, data: Any) -> Inbound:
    if kind == "inbound":
        data["channel_type"] = ChannelType(data["channel_type"])
        data["type"] = MessageType(data["type"])
        return InboundEvent(**data)
    if kind == "status":
        data["status"] = DeliveryStatus(data["status"])
        return StatusEvent(**data)
    if kind == "command":
        return ConversationCommand(**data)
    if kind == "outbound":
        raise EnvelopeError("an outbound message on an inbound shard")
    raise EnvelopeError(f"unknown envelope kind {kind!r}")


def decode_replies(body: bytes) -> list[OutboundMessage]:
    """The replies of an outbound body: kind "replies" (a list), or "outbound" (one reply)."""
    with _reading():
        kind, data = _opened(body)
        if kind == "outbound":
            return [reply_from(data)]
        if kind == "replies":
            return [reply_from(item) for item in data]
    raise EnvelopeError(f"not an outbound envelope: kind {kind!r}")


def _opened(body: bytes) -> tuple[str, Any]:
    return _checked(orjson.loads(body))


def _checked(env: dict[str, Any]) -> tuple[str, Any]:
    if env.get("v") != VERSION:
        raise EnvelopeError(f"unsupported envelope version {env.get('v')!r}")
    return env["kind"], env["data"]


@contextlib.contextmanager
def _reading() -> Iterator[None]:
    """Whatever a malformed body makes decoding raise, as an EnvelopeError."""
    try:
        yield
    except EnvelopeError:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise EnvelopeError(f"malformed envelope: {exc}") from None
