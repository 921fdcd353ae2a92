"""The last step of every channel parser: events cleaned and checked before they reach the bus.

PostgreSQL refuses U+0000 in text and jsonb and timestamps past year 294276, and one such value in a
batch used to stop every worker it reached. So, at the edge and for every platform alike:
U+0000 is removed from every string (keys too) of an event; the text is cut at MAX_TEXT characters,
the payload at MAX_PAYLOAD and every other string at MAX_STRING; a raw copy larger than MAX_RAW bytes
is replaced by a marker; ids and keys must be short printable strings and the timestamp a finite
epoch between 1970 and 9999. A value that breaks those rules makes the whole body MalformedBody (400):
the platform sent something that is not what it documents, and nothing of it is enqueued.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import orjson

from engine import sanitize
from engine.channels.base import Event, MalformedBody
from engine.models import ConversationCommand, InboundEvent, StatusEvent

MAX_TEXT = 40_000  # characters; Slack allows 40k, the others 4,096
MAX_PAYLOAD = 4096  # characters of a button / postback payload
MAX_STRING = 4096  # characters of any other string (names, attributes, media fields)
MAX_ID = 512  # characters of an id or key (event id, conversation, contact, platform message id)
MAX_RAW = 64 * 1024  # bytes of an event's raw copy kept in message_history
LAST_EPOCH = 253_402_300_799  # 9999-12-31T23:59:59Z


def scrub(value: Any, limit: int = MAX_STRING) -> Any:
    """value with U+0000 removed from every string and key and strings cut at limit characters."""
    try:
        return sanitize.scrub(value, limit, key_limit=MAX_ID)
    except sanitize.TooDeep as exc:
        raise MalformedBody(str(exc)) from None


def _identifier(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise MalformedBody(f"{name} is not a string")
    cleaned = value.replace("\x00", "")
    if not cleaned or len(cleaned) > MAX_ID or not cleaned.isprintable():
        raise MalformedBody(f"{name} is empty, longer than {MAX_ID} characters or not printable")
    return cleaned


def _text(name: str, value: object, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedBody(f"{name} is not a string")
    return scrub(value, limit)  # type: ignore[no-any-return]


def _timestamp(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedBody("timestamp is not a number")
    if not math.isfinite(value) or not 0 <= value <= LAST_EPOCH:
        raise MalformedBody(f"timestamp {value!r} is not an epoch between 1970 and 9999")
    return float(value)


def _mapping(name: str, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedBody(f"{name} is not an object")
    cleaned: dict[str, Any] = scrub(value)
    return cleaned


def _optional_mapping(name: str, value: object) -> dict[str, Any] | None:
    return None if value is None else _mapping(name, value)


def _raw(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedBody("raw is not an object")
    cleaned: dict[str, Any] = scrub(value, MAX_TEXT)
    size = len(orjson.dumps(cleaned))
    return cleaned if size <= MAX_RAW else {"truncated": True, "bytes": size}


def inbound(event: InboundEvent) -> InboundEvent:
    return dataclasses.replace(
        event,
        event_id=_identifier("event id", event.event_id),
        conversation_key=_identifier("conversation key", event.conversation_key),
        contact_key=_identifier("contact key", event.contact_key),
        timestamp=_timestamp(event.timestamp),
        text=_text("text", event.text, MAX_TEXT),
        payload=_text("payload", event.payload, MAX_PAYLOAD),
        contact_name=_text("contact name", event.contact_name, MAX_STRING),
        contact_attributes=_mapping("contact attributes", event.contact_attributes),
        media=_optional_mapping("media", event.media),
        reply_to=_mapping("reply_to", event.reply_to),
        raw=_raw(event.raw),
    )


def status(event: StatusEvent) -> StatusEvent:
    return dataclasses.replace(
        event,
        platform_message_id=_identifier("platform message id", event.platform_message_id),
        conversation_key=_identifier("conversation key", event.conversation_key),
        timestamp=_timestamp(event.timestamp),
        error_code=_text("error code", event.error_code, MAX_ID),
        error=_text("error", event.error, MAX_STRING),
    )


def command(event: ConversationCommand) -> ConversationCommand:
    """A platform-made command (WhatsApp user_preferences): its key and time, as for any event."""
    return dataclasses.replace(
        event,
        conversation_key=_identifier("conversation key", event.conversation_key),
        issued_at=_timestamp(event.issued_at),
    )


def events(parsed: list[Event]) -> list[Event]:
    """Every event cleaned; raises MalformedBody on the first that cannot be."""
    return [
        inbound(e) if isinstance(e, InboundEvent) else status(e) if isinstance(e, StatusEvent) else command(e)
        for e in parsed
    ]
