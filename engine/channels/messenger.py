"""Facebook Messenger and Instagram messaging: Meta page webhooks in, the Send API out.

Same handshake and signature as WhatsApp (engine.channels.meta), different envelope: object "page"
or "instagram" with events in entry[].messaging[] (channels.md §1.9). A conversation is the sender's
page-scoped id (PSID / IGSID); the dedupe key is message.mid. Echoes of our own sends are dropped.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp

from engine.channels import meta
from engine.channels.base import Event, MalformedBody, WebhookReply, WebhookRequest, bound, load_json
from engine.models import (
    ChannelInfo,
    ChannelType,
    DeliveryStatus,
    InboundEvent,
    MessageType,
    OutboundMessage,
    SendResult,
    StatusEvent,
)

log = logging.getLogger(__name__)

OBJECTS = {"page": ChannelType.MESSENGER, "instagram": ChannelType.INSTAGRAM}
MAX_TEXT, MAX_QUICK_REPLIES, MAX_QUICK_REPLY_TITLE = 2000, 13, 20


class MessengerChannel:
    types: tuple[ChannelType, ...] = (ChannelType.MESSENGER, ChannelType.INSTAGRAM)

    def handshake(self, request: WebhookRequest, channel: ChannelInfo) -> WebhookReply | None:
        return meta.handshake(request, channel)

    def verify(self, request: WebhookRequest, channel: ChannelInfo) -> None:
        meta.verify(request, channel)

    def parse(self, request: WebhookRequest, channel: ChannelInfo) -> list[Event]:
        doc = load_json(request.body)
        if not isinstance(doc, dict) or doc.get("object") not in OBJECTS or not isinstance(doc.get("entry"), list):
            raise MalformedBody("a Messenger/Instagram webhook has object page|instagram and an entry list")
        events: list[Event] = []
        try:
            for entry in doc["entry"]:
                for item in entry.get("messaging") or ():
                    echo = bool((item.get("message") or {}).get("is_echo"))  # from the page: no binding
                    if echo or bound(channel, item["recipient"]["id"]):
                        events.extend(_events(channel, item))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise MalformedBody(f"Messenger webhook lacks a required field: {exc!r}") from None
        return events

    async def send(
        self, http: aiohttp.ClientSession, base_url: str, channel: ChannelInfo, message: OutboundMessage
    ) -> SendResult:
        if message.kind != "message":
            return SendResult(platform_message_id=None)  # postbacks need no acknowledgement
        page_id = message.reply_to.get("page_id") or channel.external_id
        recipient = message.reply_to.get("recipient_id") or message.conversation_key
        content: dict[str, Any] = {"text": message.text[:MAX_TEXT]}
        if message.buttons:
            if len(message.buttons) > MAX_QUICK_REPLIES:
                log.warning("messenger allows %d quick replies; the rest are dropped", MAX_QUICK_REPLIES)
            content["quick_replies"] = [
                {"content_type": "text", "title": b.title[:MAX_QUICK_REPLY_TITLE], "payload": b.id[:1000]}
                for b in message.buttons[:MAX_QUICK_REPLIES]
            ]
        # messaging_type RESPONSE: a reply inside the 24 h window opened by the user's message.
        body = {"recipient": {"id": recipient}, "messaging_type": "RESPONSE", "message": content}
        data = await meta.post_graph(http, f"{base_url}/{page_id}/messages", channel.secrets["page_token"], body)
        return SendResult(platform_message_id=str(data["message_id"]))


def _events(channel: ChannelInfo, item: dict[str, Any]) -> list[Event]:
    sender = str(item["sender"]["id"])
    timestamp = item["timestamp"] / 1000  # Meta page webhooks count milliseconds
    if "message" in item:
        message = item["message"]
        if message.get("is_echo"):
            return []  # our own send, reflected back (Instagram always echoes)
        kind, text, payload, media = _message_content(message)
        return [_event(channel, item, message["mid"], kind, timestamp, text, payload, media)]
    if "postback" in item:
        postback = item["postback"]
        # Older postbacks carry no mid; the (sender, ms timestamp) pair is stable across redeliveries.
        event_id = postback.get("mid") or f"postback:{sender}:{item['timestamp']}"
        return [
            _event(
                channel,
                item,
                event_id,
                MessageType.BUTTON,
                timestamp,
                postback.get("title"),
                postback["payload"],
            )
        ]
    if "reaction" in item:
        reaction = item["reaction"]
        media = {
            "message_id": reaction.get("mid"),
            "emoji": reaction.get("emoji"),
            "action": reaction.get("action"),
        }
        event_id = f"reaction:{sender}:{reaction.get('mid')}:{reaction.get('action')}:{item['timestamp']}"
        return [_event(channel, item, event_id, MessageType.REACTION, timestamp, reaction.get("emoji"), None, media)]
    if "delivery" in item:
        return [
            StatusEvent(channel.id, channel.tenant_id, mid, DeliveryStatus.DELIVERED, timestamp, sender)
            for mid in item["delivery"].get("mids") or ()
        ]
    log.info("messenger event ignored", extra={"keys": sorted(set(item) - {"sender", "recipient", "timestamp"})})
    return []


def _message_content(
    message: dict[str, Any],
) -> tuple[MessageType, str | None, str | None, dict[str, Any] | None]:
    text = message.get("text")
    if "quick_reply" in message:
        return MessageType.BUTTON, text, message["quick_reply"]["payload"], None
    attachments = message.get("attachments") or []
    if attachments:
        first = attachments[0]
        payload = first.get("payload") or {}
        if first["type"] == "location" and "coordinates" in payload:
            coords = payload["coordinates"]
            return MessageType.LOCATION, text, None, {"latitude": coords["lat"], "longitude": coords["long"]}
        media: dict[str, Any] = {"kind": first["type"], "url": payload.get("url")}
        if len(attachments) > 1:
            media["attachments"] = attachments
        if "sticker_id" in payload:
            media["sticker_id"] = payload["sticker_id"]
        return MessageType.MEDIA, text, None, media
    if text is None:
        return MessageType.UNSUPPORTED, None, None, None
    return MessageType.TEXT, text, None, None


def _event(
    channel: ChannelInfo,
    item: dict[str, Any],
    event_id: str,
    kind: MessageType,
    timestamp: float,
    text: str | None,
    payload: str | None = None,
    media: dict[str, Any] | None = None,
) -> InboundEvent:
    sender, page = str(item["sender"]["id"]), str(item["recipient"]["id"])
    return InboundEvent(
        channel_id=channel.id,
        tenant_id=channel.tenant_id,
        channel_type=channel.type,
        event_id=str(event_id),
        conversation_key=sender,
        contact_key=sender,
        type=kind,
        timestamp=timestamp,
        text=text,
        payload=payload,
        media=media,
        reply_to={"recipient_id": sender, "page_id": page},
        raw=item,
    )
