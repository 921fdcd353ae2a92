"""Slack Events API and interactivity in, chat.postMessage out.

Every request (events, url_verification, button clicks) is signed v0 over "v0:<ts>:<raw body>" with
the app's signing secret and must be younger than 5 minutes (channels.md §3.2).

Conversations: a thread is a conversation, keyed "<channel>:<thread_ts>", and the bot answers in it.
A top-level message is keyed by its channel alone (DMs always are) and answered top-level, unless
the channel's config says {"threads": true}: then every top-level message in a public/private
channel opens a thread of its own ("<channel>:<ts>") and the bot answers there, which keeps
several people in one busy channel from sharing one conversation state.

The dedupe key of a message is "<channel>:<ts>" rather than the envelope's event_id: a retry keeps
both, but the message.channels and app_mention subscriptions deliver the same message twice under
two event_ids, and only (channel, ts) collapses those. A button click is "action:<user>:<action_ts>".
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from engine.channels.base import (
    Event,
    MalformedBody,
    Unauthorized,
    WebhookReply,
    WebhookRequest,
    bound,
    load_json,
    post,
    same_secret,
)
from engine.models import ChannelInfo, ChannelType, InboundEvent, MessageType, OutboundMessage, SendError, SendResult

log = logging.getLogger(__name__)

MAX_AGE = 300  # seconds, either direction (slack_sdk checks both)
# Subtypes that are still a person talking; every other subtype (edits, deletes, joins, bot
# posts, ...) is not a message to answer.
HUMAN_SUBTYPES = frozenset({None, "file_share", "thread_broadcast", "me_message"})
RETRYABLE_ERRORS = frozenset(
    {"ratelimited", "rate_limited", "service_unavailable", "request_timeout", "internal_error"}
)
MAX_TEXT = 4000


def signature(signing_secret: str, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


class SlackChannel:
    types: tuple[ChannelType, ...] = (ChannelType.SLACK,)

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    def handshake(self, request: WebhookRequest, channel: ChannelInfo) -> WebhookReply | None:
        if request.method.upper() != "POST" or _is_form(request):
            return None
        try:
            doc = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return None  # parse() reports it
        if isinstance(doc, dict) and doc.get("type") == "url_verification":
            return WebhookReply(200, str(doc.get("challenge", "")))
        return None

    def verify(self, request: WebhookRequest, channel: ChannelInfo) -> None:
        secret = channel.secrets.get("signing_secret", "")
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        given = request.headers.get("X-Slack-Signature", "")
        if not secret or not timestamp or not given:
            raise Unauthorized("missing X-Slack-Signature or X-Slack-Request-Timestamp")
        try:
            age = abs(self.clock() - int(timestamp))
            signature(secret, timestamp, b"")  # a timestamp that is not UTF-8 is refused here, not with a 500
        except (ValueError, UnicodeEncodeError):
            raise Unauthorized("X-Slack-Request-Timestamp is not an integer") from None
        if age > MAX_AGE:
            raise Unauthorized("X-Slack-Request-Timestamp outside the 5 minute window")
        if not same_secret(given, signature(secret, timestamp, request.body)):
            raise Unauthorized("X-Slack-Signature does not match the body")

    def parse(self, request: WebhookRequest, channel: ChannelInfo) -> list[Event]:
        try:
            if _is_form(request):
                payload = _form_payload(request.body)
                team = (payload.get("team") or {}).get("id") or (payload.get("user") or {}).get("team_id")
                clicks = _interaction_events(channel, payload)
                return clicks if not clicks or bound(channel, team, payload.get("api_app_id")) else []
            doc = load_json(request.body)
            if not isinstance(doc, dict) or "type" not in doc:
                raise MalformedBody("a Slack event is an object with a type")
            if doc["type"] != "event_callback":
                if doc["type"] == "app_rate_limited":
                    log.warning("slack throttles this app's events", extra={"team": doc.get("team_id")})
                return []
            event = _message_event(channel, doc)
            if event is not None and not bound(channel, doc.get("team_id"), doc.get("api_app_id")):
                return []  # another workspace's (or app's) event, signed with a shared secret
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise MalformedBody(f"Slack payload lacks a required field: {exc!r}") from None
        return [event] if event else []

    async def send(
        self, http: aiohttp.ClientSession, base_url: str, channel: ChannelInfo, message: OutboundMessage
    ) -> SendResult:
        if message.kind != "message":
            return SendResult(platform_message_id=None)  # a click is acknowledged by the webhook's 200
        body: dict[str, Any] = {"channel": message.reply_to.get("channel"), "text": message.text[:MAX_TEXT]}
        if thread_ts := message.reply_to.get("thread_ts"):
            body["thread_ts"] = thread_ts
        if message.buttons:
            elements = [
                {
                    "type": "button",
                    "action_id": f"{i}:{b.id}"[:255],  # unique per message even when ids repeat
                    "text": {"type": "plain_text", "text": b.title[:75], "emoji": True},
                    "value": b.id[:2000],
                }
                for i, b in enumerate(message.buttons[:25])
            ]
            body["blocks"] = [
                {"type": "section", "text": {"type": "mrkdwn", "text": body["text"][:3000] or " "}},
                {"type": "actions", "block_id": "buttons", "elements": elements},
            ]
        headers = {
            "Authorization": f"Bearer {channel.secrets['bot_token']}",
            "Content-Type": "application/json; charset=utf-8",  # without charset Slack warns
        }
        data = await _post(http, f"{base_url}/chat.postMessage", orjson.dumps(body), headers)
        return SendResult(platform_message_id=str(data["ts"]))


def _is_form(request: WebhookRequest) -> bool:
    ctype = request.headers.get("Content-Type", "")
    return ctype.startswith("application/x-www-form-urlencoded") or (not ctype and request.body.startswith(b"payload="))


def _form_payload(body: bytes) -> dict[str, Any]:
    fields = urllib.parse.parse_qs(body.decode(), strict_parsing=True)
    payload = orjson.loads(fields["payload"][0])
    if not isinstance(payload, dict):
        raise ValueError("interactivity payload is not an object")
    return payload


def _bot_user_ids(channel: ChannelInfo, doc: dict[str, Any]) -> set[str]:
    ids = {a["user_id"] for a in doc.get("authorizations") or () if a.get("is_bot") and a.get("user_id")}
    for source in (channel.config, channel.secrets):
        if source.get("bot_user_id"):
            ids.add(str(source["bot_user_id"]))
    return ids


def _thread_key(channel: ChannelInfo, event: dict[str, Any]) -> tuple[str, str | None]:
    """(conversation key, thread to answer in) for a message or the message a button sits on."""
    ch, ts, thread_ts = event["channel"], event["ts"], event.get("thread_ts")
    if thread_ts:
        return f"{ch}:{thread_ts}", thread_ts
    if channel.config.get("threads") and event.get("channel_type") != "im":
        return f"{ch}:{ts}", ts
    return ch, None


def _message_event(channel: ChannelInfo, doc: dict[str, Any]) -> InboundEvent | None:
    event = doc["event"]
    if event.get("type") not in ("message", "app_mention") or event.get("subtype") not in HUMAN_SUBTYPES:
        return None
    if event.get("bot_id") or not event.get("user") or event["user"] in _bot_user_ids(channel, doc):
        return None  # our own posts (and other bots'): answering them loops
    key, thread_ts = _thread_key(channel, event)
    files = event.get("files") or []
    kind, media = MessageType.TEXT, None
    if files:
        first = files[0]
        kind = MessageType.MEDIA
        media = {"kind": "file", "id": first.get("id"), "mime_type": first.get("mimetype"), "name": first.get("name")}
        media["url"] = first.get("url_private_download") or first.get("url_private")
    reply_to: dict[str, Any] = {"channel": event["channel"]}
    if thread_ts:
        reply_to["thread_ts"] = thread_ts
    return InboundEvent(
        channel_id=channel.id,
        tenant_id=channel.tenant_id,
        channel_type=ChannelType.SLACK,
        event_id=f"{event['channel']}:{event['ts']}",
        conversation_key=key,
        contact_key=event["user"],
        type=kind,
        timestamp=float(event["ts"]),
        text=event.get("text") or None,
        contact_attributes={"team": doc["team_id"]} if doc.get("team_id") else {},
        media=media,
        reply_to=reply_to,
        raw={"event_id": doc.get("event_id"), "event": event},
    )


def _interaction_events(channel: ChannelInfo, payload: dict[str, Any]) -> list[Event]:
    if payload.get("type") != "block_actions":
        return []  # view submissions, shortcuts, ...: not handled
    user = payload["user"]
    container = payload.get("container") or {}
    origin = payload.get("message") or {}
    ch = (payload.get("channel") or {}).get("id") or container["channel_id"]
    thread_ts = container.get("thread_ts") or origin.get("thread_ts")
    # The clicked message is the bot's own: in a thread when the conversation is one, so it never
    # opens a new thread itself (hence "im", which keeps a top-level message keyed by its channel).
    key, reply_thread = _thread_key(
        channel, {"channel": ch, "ts": origin.get("ts", ""), "thread_ts": thread_ts, "channel_type": "im"}
    )
    reply_to: dict[str, Any] = {"channel": ch}
    if reply_thread:
        reply_to["thread_ts"] = reply_thread
    return [
        InboundEvent(
            channel_id=channel.id,
            tenant_id=channel.tenant_id,
            channel_type=ChannelType.SLACK,
            event_id=f"action:{user['id']}:{action['action_ts']}",
            conversation_key=key,
            contact_key=user["id"],
            type=MessageType.BUTTON,
            timestamp=float(action["action_ts"]),
            text=(action.get("text") or {}).get("text"),
            payload=action.get("value") or action.get("action_id"),
            contact_name=user.get("name") or user.get("username"),
            reply_to=reply_to,
            raw={"action": action, "trigger_id": payload.get("trigger_id"), "message_ts": origin.get("ts")},
        )
        for action in payload.get("actions") or ()
    ]


async def _post(http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """POST one Web API call; errors are HTTP 200 with ok:false, throttling is 429 (§3.6)."""
    answer = await post(http, "slack", url, data=body, headers=headers)
    status, retry_after, data = answer.status, answer.retry_after, answer.data
    error = str(data.get("error") or "") if isinstance(data, dict) else ""
    wait = float(retry_after) if retry_after and retry_after.isdigit() else None
    if status == 429 or error in ("ratelimited", "rate_limited"):
        raise SendError(error or "ratelimited", code=error or "429", retryable=True, retry_after=wait or 1.0)
    if status >= 500:
        raise SendError(error or f"slack answered HTTP {status}", code=error or str(status), retryable=True)
    if status == 200 and isinstance(data, dict) and data.get("ok"):
        return data
    # fatal_error may have half-succeeded: without an idempotency key a retry could double-post.
    code = error or str(status)
    raise SendError(code, code=code, retryable=error in RETRYABLE_ERRORS)
