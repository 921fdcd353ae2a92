"""Bus message bodies: the internal types as orjson bytes with a version field.

Decoding is strict about the version so that a process never misreads a body written by a newer
engine; anything else that fails to decode is a poison message for the consumer to set aside.
"""

from __future__ import annotations

from collections.abc import Sequence
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


Item = InboundEvent | StatusEvent | OutboundMessage | ConversationCommand
KINDS: dict[type, str] = {
    InboundEvent: "inbound",
    StatusEvent: "status",
    OutboundMessage: "outbound",
    ConversationCommand: "command",
}


def encode(item: Item) -> bytes:
    kind = KINDS[type(item)]
    return orjson.dumps({"v": VERSION, "kind": kind, "data": item})


def encode_raw(kind: str, data: dict[str, Any]) -> bytes:
    """An envelope around an already-plain dict (a body read back from the database)."""
    return orjson.dumps({"v": VERSION, "kind": kind, "data": data})


def encode_replies(replies: Sequence[OutboundMessage]) -> bytes:
    """Several replies in one body (kind "replies"): one broker message carries a flush's replies
    for one outbound queue."""
    return orjson.dumps({"v": VERSION, "kind": "replies", "data": replies})


def decode_replies(body: bytes) -> list[OutboundMessage]:
    """The replies of an outbound body: kind "replies" (a list), or "outbound" (one reply)."""
    try:
        env = orjson.loads(body)
        if env.get("v") != VERSION:
            raise EnvelopeError(f"unsupported envelope version {env.get('v')!r}")
        if env["kind"] == "outbound":
            return [_outbound(env["data"])]
        if env["kind"] == "replies":
            return [_outbound(data) for data in env["data"]]
    except EnvelopeError:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise EnvelopeError(f"malformed envelope: {exc}") from None
    raise EnvelopeError(f"not an outbound envelope: kind {env['kind']!r}")


def _outbound(data: dict[str, Any]) -> OutboundMessage:
    data["channel_type"] = ChannelType(data["channel_type"])
    data["buttons"] = tuple(Button(**b) for b in data["buttons"])
    return OutboundMessage(**data)


def decode(body: bytes) -> Item:
    try:
        env = orjson.loads(body)
        if env.get("v") != VERSION:
            raise EnvelopeError(f"unsupported envelope version {env.get('v')!r}")
        data: dict[str, Any] = env["data"]
        kind = env["kind"]
        if kind == "inbound":
            data["channel_type"] = ChannelType(data["channel_type"])
            data["type"] = MessageType(data["type"])
            return InboundEvent(**data)
        if kind == "status":
            data["status"] = DeliveryStatus(data["status"])
            return StatusEvent(**data)
        if kind == "outbound":
            return _outbound(data)
        if kind == "command":
            return ConversationCommand(**data)
    except EnvelopeError:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise EnvelopeError(f"malformed envelope: {exc}") from None
    raise EnvelopeError(f"unknown envelope kind {kind!r}")
