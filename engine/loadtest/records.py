"""The traffic file: one JSON object per line (ndjson), one webhook request each.

    {"t": 1.25, "platform": "telegram", "conversation": "111", "body": "{\"update_id\": ...}"}

t is seconds from the start of the recording; platform one of telegram, whatsapp, messenger,
instagram, slack; conversation the conversation key (requests of one conversation are replayed in
order); body the request body exactly as the platform sent it (a UTF-8 string; "body_b64" instead for
bytes that are not UTF-8). Optional: content_type (default application/json), kind (message, button,
status, other: how many replies to expect), channel (the channel it was captured on). Files written by
hand or by a script need only the four required fields. Lines that are blank or start with # are skipped.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import orjson

PLATFORMS = ("telegram", "whatsapp", "messenger", "instagram", "slack")
KINDS = ("message", "button", "status", "other")
JSON = "application/json"


class RecordError(ValueError):
    """A line of a traffic file is not a valid record; the message names the line and the field."""


@dataclass(frozen=True, slots=True)
class Record:
    t: float
    platform: str
    conversation: str
    body: bytes
    content_type: str = JSON
    kind: str | None = None  # None: decided from the body when replayed
    channel: str | None = None

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {"t": round(self.t, 6), "platform": self.platform, "conversation": self.conversation}
        try:
            doc["body"] = self.body.decode()
        except UnicodeDecodeError:
            doc["body_b64"] = base64.b64encode(self.body).decode()
        if self.content_type != JSON:
            doc["content_type"] = self.content_type
        if self.kind is not None:
            doc["kind"] = self.kind
        if self.channel is not None:
            doc["channel"] = self.channel
        return orjson.dumps(doc)


def parse_record(line: bytes | str, number: int = 0) -> Record:
    where = f"line {number}" if number else "record"
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise RecordError(f"{where}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RecordError(f"{where}: a record is a JSON object")
    t = doc.get("t")
    if not isinstance(t, int | float) or isinstance(t, bool) or t < 0:
        raise RecordError(f"{where}.t: a number of seconds >= 0 is required")
    platform = doc.get("platform")
    if platform not in PLATFORMS:
        raise RecordError(f"{where}.platform: one of {', '.join(PLATFORMS)} is required, got {platform!r}")
    conversation = doc.get("conversation")
    if not isinstance(conversation, str | int) or conversation == "":
        raise RecordError(f"{where}.conversation: a non-empty string is required")
    if isinstance(doc.get("body"), str):
        body = doc["body"].encode()
    elif isinstance(doc.get("body_b64"), str):
        try:
            body = base64.b64decode(doc["body_b64"], validate=True)
        except ValueError:
            raise RecordError(f"{where}.body_b64: not base64") from None
    else:
        raise RecordError(f"{where}.body: a string (or body_b64) is required")
    kind = doc.get("kind")
    if kind is not None and kind not in KINDS:
        raise RecordError(f"{where}.kind: one of {', '.join(KINDS)}, got {kind!r}")
    content_type = doc.get("content_type", JSON)
    if not isinstance(content_type, str):
        raise RecordError(f"{where}.content_type: a string is required")
    channel = doc.get("channel")
    return Record(float(t), platform, str(conversation), body, content_type, kind, str(channel) if channel else None)


def read_records(stream: IO[bytes]) -> list[Record]:
    """Every record of a traffic file, sorted by t (stable: equal times keep file order)."""
    records = []
    for number, line in enumerate(stream, 1):
        stripped = line.strip()
        if stripped and not stripped.startswith(b"#"):
            records.append(parse_record(stripped, number))
    records.sort(key=lambda r: r.t)
    return records


def write_records(stream: IO[bytes], records: Iterable[Record]) -> int:
    count = 0
    for record in records:
        stream.write(record.to_json() + b"\n")
        count += 1
    return count


def iter_lines(records: Iterable[Record]) -> Iterator[bytes]:
    for record in records:
        yield record.to_json() + b"\n"
