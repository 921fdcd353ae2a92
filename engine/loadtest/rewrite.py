"""Per-run id rewriting, so a target's dedupe does not drop a replay and copies are new people.

Every platform id the engine deduplicates on (Telegram update_id, WhatsApp wamid, Meta mid, Slack
ts / event_id / action_ts) gets a fresh value for this run, through one mapping per run: an id that
appears twice in the recording (a platform retry) gets the same new value twice, so the duplicate
stays a duplicate. Copy k > 0 of a conversation gets new sender and chat ids (copy 0 keeps the
recorded ones), and the ids naming the business side (WhatsApp phone-number id, page id, Slack team)
become the target channel's external id.
"""

from __future__ import annotations

import itertools
import secrets
import time
import urllib.parse
import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from engine.loadtest.records import Record

HUMAN_SLACK_SUBTYPES = (None, "file_share", "thread_broadcast", "me_message")
COPY_STRIDE = 10**13  # Telegram ids stay below 2**53 for copies < 900


class RewriteError(ValueError):
    """A body is not the platform's JSON shape."""


@dataclass(frozen=True, slots=True)
class Rewritten:
    body: bytes
    reply_chat: str | None  # the chat a reply to this request is addressed to at the send API
    kind: str  # message | button | status | other
    event_ids: tuple[str, ...]  # the new dedupe ids (a repeated one marks a duplicate delivery)


class IdMap:
    """One run's id mapping: the same old id always gets the same new id."""

    def __init__(self, run: str | None = None) -> None:
        self.run = run or secrets.token_hex(4)
        self._ints: dict[object, int] = {}
        self._strs: dict[str, str] = {}
        self._ts: dict[str, str] = {}
        self._next_int = itertools.count(zlib.crc32(self.run.encode()) % 10**9 * 10**5 + 10**14)
        self._next = itertools.count(1)

    def scoped(self, copy: int) -> Scoped:
        return Scoped(self, copy)

    def integer(self, old: object) -> int:
        if old not in self._ints:
            self._ints[old] = next(self._next_int)
        return self._ints[old]

    def string(self, old: str, prefix: str) -> str:
        key = f"{prefix}\x1f{old}"
        if key not in self._strs:
            self._strs[key] = f"{prefix}LT{self.run}x{next(self._next)}"
        return self._strs[key]

    def slack_ts(self, old: str) -> str:
        """Slack ts ("seconds.micro"), increasing in first-seen order, so threads stay threads."""
        if old not in self._ts:
            value = _SlackClock.next()
            self._ts[old] = f"{value // 1_000_000}.{value % 1_000_000:06d}"
        return self._ts[old]


class _SlackClock:
    """Microseconds, strictly increasing in this process: new Slack ts never repeat across runs."""

    last = 0

    @classmethod
    def next(cls) -> int:
        cls.last = max(int(time.time() * 1_000_000), cls.last + 1)
        return cls.last


@dataclass(frozen=True, slots=True)
class Scoped:
    """The run's mapping for one copy: copies of one recorded id get different new ids."""

    ids: IdMap
    copy: int

    def integer(self, old: object) -> int:
        return self.ids.integer((self.copy, old))

    def string(self, old: str, prefix: str) -> str:
        return self.ids.string(f"{self.copy}\x1f{old}", prefix)

    def slack_ts(self, old: str) -> str:
        return self.ids.slack_ts(f"{self.copy}\x1f{old}")


def copy_int(old: Any, copy: int) -> Any:
    if copy == 0 or not isinstance(old, int) or isinstance(old, bool):
        return old
    return old + copy * COPY_STRIDE if old >= 0 else old - copy * COPY_STRIDE


def copy_str(old: Any, copy: int) -> Any:
    return old if copy == 0 or old is None else f"{old}c{copy}"


# --- Telegram -----------------------------------------------------------------------------------


def _telegram(doc: dict[str, Any], ids: Scoped, copy: int, external_id: str | None) -> Rewritten:
    doc["update_id"] = new_id = ids.integer(("tg", doc["update_id"]))
    chat = None
    for key in ("message", "edited_message", "channel_post"):
        if isinstance(doc.get(key), dict):
            message = doc[key]
            message["chat"]["id"] = copy_int(message["chat"]["id"], copy)
            if isinstance(message.get("from"), dict):
                message["from"]["id"] = copy_int(message["from"]["id"], copy)
            chat = str(message["chat"]["id"])
            return Rewritten(b"", chat, "message", (str(new_id),))
    query = doc.get("callback_query")
    if isinstance(query, dict):
        query["id"] = ids.string(str(query["id"]), "cb")
        query["from"]["id"] = copy_int(query["from"]["id"], copy)
        origin = query.get("message")
        if isinstance(origin, dict) and isinstance(origin.get("chat"), dict):
            origin["chat"]["id"] = copy_int(origin["chat"]["id"], copy)
            chat = str(origin["chat"]["id"])
        else:
            chat = str(query["from"]["id"])
        return Rewritten(b"", chat, "button", (str(new_id),))
    return Rewritten(b"", None, "other", (str(new_id),))


# --- WhatsApp -----------------------------------------------------------------------------------


def _whatsapp(doc: dict[str, Any], ids: Scoped, copy: int, external_id: str | None) -> Rewritten:
    chat, kind, event_ids = None, "other", []
    for entry in doc.get("entry") or ():
        for change in entry.get("changes") or ():
            value = change.get("value") or {}
            if external_id and isinstance(value.get("metadata"), dict):
                value["metadata"]["phone_number_id"] = external_id
            for contact in value.get("contacts") or ():
                contact["wa_id"] = copy_str(contact.get("wa_id"), copy)
                if contact.get("user_id"):
                    contact["user_id"] = copy_str(contact["user_id"], copy)
            for message in value.get("messages") or ():
                message["id"] = ids.string(message["id"], "wamid.")
                event_ids.append(message["id"])
                for field in ("from", "from_user_id"):
                    if message.get(field):
                        message[field] = copy_str(message[field], copy)
                chat = chat or message.get("from") or message.get("from_user_id")
                kind = "button" if message.get("type") in ("interactive", "button") else "message"
            for status in value.get("statuses") or ():
                for field in ("recipient_id", "recipient_user_id"):
                    if status.get(field):
                        status[field] = copy_str(status[field], copy)
                if kind == "other":
                    kind = "status"
    return Rewritten(b"", chat, kind, tuple(event_ids))


# --- Messenger and Instagram --------------------------------------------------------------------


def _messenger(doc: dict[str, Any], ids: Scoped, copy: int, external_id: str | None) -> Rewritten:
    chat, kind, event_ids = None, "other", []
    for entry in doc.get("entry") or ():
        if external_id:
            entry["id"] = external_id
        for item in entry.get("messaging") or ():
            if external_id and isinstance(item.get("recipient"), dict):
                item["recipient"]["id"] = external_id
            item["sender"]["id"] = copy_str(item["sender"]["id"], copy)
            message = item.get("message")
            if isinstance(message, dict) and not message.get("is_echo"):
                message["mid"] = ids.string(message["mid"], "m_")
                event_ids.append(message["mid"])
                chat, kind = str(item["sender"]["id"]), "button" if "quick_reply" in message else "message"
            elif isinstance(item.get("postback"), dict):
                if item["postback"].get("mid"):
                    item["postback"]["mid"] = ids.string(item["postback"]["mid"], "m_")
                    event_ids.append(item["postback"]["mid"])
                chat, kind = str(item["sender"]["id"]), "button"
            elif "delivery" in item or "read" in item:
                kind = "status" if kind == "other" else kind
    return Rewritten(b"", chat, kind, tuple(event_ids))


# --- Slack --------------------------------------------------------------------------------------


def _slack_event(doc: dict[str, Any], ids: Scoped, copy: int, external_id: str | None) -> Rewritten:
    if doc.get("event_id"):
        doc["event_id"] = ids.string(doc["event_id"], "Ev")
    if external_id and doc.get("team_id"):
        doc["team_id"] = external_id
    event = doc.get("event")
    if doc.get("type") != "event_callback" or not isinstance(event, dict):
        return Rewritten(b"", None, "other", ())
    for field in ("ts", "event_ts", "thread_ts"):
        if event.get(field):
            event[field] = ids.slack_ts(event[field])
    for field in ("channel", "user"):
        if event.get(field):
            event[field] = copy_str(event[field], copy)
    human = event.get("type") in ("message", "app_mention") and event.get("subtype") in HUMAN_SLACK_SUBTYPES
    kind = "message" if human and not event.get("bot_id") and event.get("user") else "other"
    event_id = f"{event.get('channel')}:{event.get('ts')}"
    return Rewritten(b"", event.get("channel"), kind, (event_id,))


def _slack_action(payload: dict[str, Any], ids: Scoped, copy: int, external_id: str | None) -> Rewritten:
    user = payload.get("user") or {}
    if user.get("id"):
        user["id"] = copy_str(user["id"], copy)
    if external_id and isinstance(payload.get("team"), dict):
        payload["team"]["id"] = external_id
    channel = None
    if isinstance(payload.get("channel"), dict):
        payload["channel"]["id"] = channel = copy_str(payload["channel"]["id"], copy)
    container = payload.get("container") or {}
    if container.get("channel_id"):
        container["channel_id"] = copy_str(container["channel_id"], copy)
        channel = channel or container["channel_id"]
    for holder, field in ((container, "message_ts"), (container, "thread_ts"), (payload.get("message") or {}, "ts")):
        if holder.get(field):
            holder[field] = ids.slack_ts(holder[field])
    event_ids = []
    for action in payload.get("actions") or ():
        action["action_ts"] = ids.slack_ts(action["action_ts"])
        event_ids.append(f"action:{user.get('id')}:{action['action_ts']}")
    return Rewritten(b"", channel, "button" if event_ids else "other", tuple(event_ids))


def rewrite(record: Record, ids: IdMap, copy: int = 0, external_id: str | None = None) -> Rewritten:
    """The record's body with this run's ids (and copy's people, and the target's ids).
    Raises RewriteError when the body is not the platform's shape."""
    try:
        if record.platform == "slack" and record.content_type.startswith("application/x-www-form-urlencoded"):
            fields = urllib.parse.parse_qs(record.body.decode(), strict_parsing=True)
            payload = orjson.loads(fields["payload"][0])
            result = _slack_action(payload, ids.scoped(copy), copy, external_id)
            body = urllib.parse.urlencode({"payload": orjson.dumps(payload).decode()}).encode()
        else:
            doc = orjson.loads(record.body)
            result = REWRITERS[record.platform](doc, ids.scoped(copy), copy, external_id)
            # Meta signs json.dumps-style escaped unicode; orjson keeps UTF-8, which any HMAC over the
            # bytes accepts as well, and the target only ever sees our re-signed bytes.
            body = orjson.dumps(doc)
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError, UnicodeDecodeError) as exc:
        raise RewriteError(f"{record.platform} body of conversation {record.conversation}: {exc!r}") from None
    kind = record.kind or result.kind
    return Rewritten(body, result.reply_chat, kind, result.event_ids)


REWRITERS = {
    "telegram": _telegram,
    "whatsapp": _whatsapp,
    "messenger": _messenger,
    "instagram": _messenger,
    "slack": _slack_event,
}
