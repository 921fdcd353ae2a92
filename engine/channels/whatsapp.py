"""WhatsApp Cloud API: batched Graph webhooks in, /{phone_number_id}/messages out.

One POST may carry several entries, changes, messages and statuses (channels.md §1.3): every one
becomes an event. Users are keyed on their business-scoped user id (BSUID) when Meta sends one and on
the phone number (wa_id) otherwise, since username users may have no phone in webhooks (§1.6).
The dedupe key is the wamid.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from engine.channels import meta
from engine.channels.base import Event, MalformedBody, WebhookReply, WebhookRequest, bound, load_json
from engine.models import (
    ChannelInfo,
    ChannelType,
    ConversationCommand,
    DeliveryStatus,
    InboundEvent,
    MessageType,
    OutboundMessage,
    SendResult,
    StatusEvent,
)

log = logging.getLogger(__name__)

MEDIA_TYPES = ("image", "audio", "video", "document", "sticker")
STATUSES = {
    "sent": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.READ,
    "played": DeliveryStatus.READ,  # voice messages: played implies read
    "failed": DeliveryStatus.FAILED,
}
MAX_TEXT, MAX_INTERACTIVE_TEXT = 4096, 1024
MAX_REPLY_BUTTONS, MAX_BUTTON_TITLE, MAX_LIST_ROWS, MAX_ROW_TITLE = 3, 20, 10, 24

# What one message type contributes to its event: (type, text, payload, media).
Parsed = tuple[MessageType, str | None, str | None, dict[str, Any] | None]


def _text(m: dict[str, Any]) -> Parsed:
    return MessageType.TEXT, m["text"]["body"], None, None


def _interactive(m: dict[str, Any]) -> Parsed:
    kind = m["interactive"]["type"]
    if kind not in ("button_reply", "list_reply"):
        return MessageType.UNSUPPORTED, None, None, {"kind": f"interactive.{kind}"}
    reply = m["interactive"][kind]
    return MessageType.BUTTON, reply.get("title"), reply["id"], None


def _template_button(m: dict[str, Any]) -> Parsed:
    # A template quick-reply click: a different shape from the interactive reply button (§1.5).
    return MessageType.BUTTON, m["button"].get("text"), m["button"].get("payload"), None


def _media(m: dict[str, Any]) -> Parsed:
    # Only the media id and its metadata: the download (GET /<media-id>, then the short-lived url)
    # is left to whoever needs the bytes.
    item = m[m["type"]]
    return MessageType.MEDIA, item.get("caption"), None, {"kind": m["type"], **item}


def _location(m: dict[str, Any]) -> Parsed:
    return MessageType.LOCATION, None, None, dict(m["location"])


def _contacts(m: dict[str, Any]) -> Parsed:
    return MessageType.CONTACTS, None, None, {"contacts": m["contacts"]}


def _reaction(m: dict[str, Any]) -> Parsed:
    reaction = m["reaction"]  # an empty emoji removes the reaction
    media = {"message_id": reaction.get("message_id"), "emoji": reaction.get("emoji") or None}
    return MessageType.REACTION, reaction.get("emoji") or None, None, media


PARSERS: dict[str, Callable[[dict[str, Any]], Parsed]] = {
    "text": _text,
    "interactive": _interactive,
    "button": _template_button,
    "location": _location,
    "contacts": _contacts,
    "reaction": _reaction,
    **dict.fromkeys(MEDIA_TYPES, _media),
}


class WhatsAppChannel:
    types: tuple[ChannelType, ...] = (ChannelType.WHATSAPP,)

    def handshake(self, request: WebhookRequest, channel: ChannelInfo) -> WebhookReply | None:
        return meta.handshake(request, channel)

    def verify(self, request: WebhookRequest, channel: ChannelInfo) -> None:
        meta.verify(request, channel)

    def parse(self, request: WebhookRequest, channel: ChannelInfo) -> list[Event]:
        doc = load_json(request.body)
        if not isinstance(doc, dict) or not isinstance(doc.get("entry"), list):
            raise MalformedBody("a WhatsApp webhook is an object with an entry list")
        events: list[Event] = []
        try:
            for entry in doc["entry"]:
                for change in entry.get("changes") or ():
                    if change.get("field") == "user_preferences":
                        events.extend(_preference_commands(channel, change["value"]))
                        continue
                    if change.get("field") != "messages":
                        continue  # template status, account updates, ...: acknowledged, not events
                    value = change["value"]
                    if not bound(channel, value["metadata"]["phone_number_id"]):
                        continue  # a number sharing this app secret, not this channel's
                    events.extend(_message_event(channel, value, m) for m in value.get("messages") or ())
                    for status in value.get("statuses") or ():
                        if (event := _status_event(channel, value, status)) is not None:
                            events.append(event)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise MalformedBody(f"WhatsApp webhook lacks a required field: {exc!r}") from None
        return events

    async def send(
        self, http: aiohttp.ClientSession, base_url: str, channel: ChannelInfo, message: OutboundMessage
    ) -> SendResult:
        if message.kind != "message":
            return SendResult(platform_message_id=None)  # nothing to acknowledge on WhatsApp
        target = message.reply_to
        phone_number_id = target.get("phone_number_id") or channel.external_id
        body: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual"}
        if target.get("to"):
            body["to"] = target["to"]
        else:  # a username user without a phone: address the BSUID (§1.6)
            body["recipient"] = target.get("recipient") or message.conversation_key
        body.update(_content(message))
        url = f"{base_url}/{phone_number_id}/messages"
        data = await meta.post_graph(http, url, channel.secrets["access_token"], body)
        return SendResult(platform_message_id=str(data["messages"][0]["id"]))


def _content(message: OutboundMessage) -> dict[str, Any]:
    """A template (rendered by engine.recovery), text, up to 3 reply buttons, or a list for more
    (WhatsApp allows no more than 3 buttons)."""
    if message.template is not None:
        return {"type": "template", "template": message.template}
    if not message.buttons:
        return {"type": "text", "text": {"body": message.text[:MAX_TEXT], "preview_url": False}}
    text = message.text[:MAX_INTERACTIVE_TEXT] or "-"
    if len(message.buttons) <= MAX_REPLY_BUTTONS:
        buttons = [
            {"type": "reply", "reply": {"id": b.id[:256], "title": b.title[:MAX_BUTTON_TITLE]}} for b in message.buttons
        ]
        action: dict[str, Any] = {"buttons": buttons}
        return {
            "type": "interactive",
            "interactive": {"type": "button", "body": {"text": text}, "action": action},
        }
    if len(message.buttons) > MAX_LIST_ROWS:
        log.warning("whatsapp list holds %d rows; %d dropped", MAX_LIST_ROWS, len(message.buttons) - MAX_LIST_ROWS)
    rows = [{"id": b.id[:200], "title": b.title[:MAX_ROW_TITLE]} for b in message.buttons[:MAX_LIST_ROWS]]
    action = {"button": "Options", "sections": [{"title": "Options", "rows": rows}]}
    return {"type": "interactive", "interactive": {"type": "list", "body": {"text": text}, "action": action}}


def _contact_for(value: dict[str, Any], phone: str | None, user_id: str | None) -> dict[str, Any]:
    contacts = value.get("contacts") or []
    for contact in contacts:
        if (user_id and contact.get("user_id") == user_id) or (phone and contact.get("wa_id") == phone):
            return dict(contact)
    return dict(contacts[0]) if len(contacts) == 1 else {}


def _message_event(channel: ChannelInfo, value: dict[str, Any], m: dict[str, Any]) -> InboundEvent:
    phone, user_id = m.get("from"), m.get("from_user_id")
    contact = _contact_for(value, phone, user_id)
    user_id = user_id or contact.get("user_id")
    phone = phone or contact.get("wa_id")
    key = user_id or phone
    if not key:
        raise ValueError("message has neither from_user_id nor from")
    parse = PARSERS.get(m["type"])
    kind, text, payload, media = (
        parse(m) if parse else (MessageType.UNSUPPORTED, None, None, {"kind": m["type"], "errors": m.get("errors")})
    )
    profile = contact.get("profile") or {}
    attributes = {
        "phone": phone,
        "username": profile.get("username"),
        "parent_user_id": contact.get("parent_user_id"),
    }
    phone_number_id = value["metadata"]["phone_number_id"]
    reply_to: dict[str, Any] = {"phone_number_id": phone_number_id, "message_id": m["id"]}
    reply_to.update({"to": phone} if phone else {"recipient": user_id})
    return InboundEvent(
        channel_id=channel.id,
        tenant_id=channel.tenant_id,
        channel_type=ChannelType.WHATSAPP,
        event_id=m["id"],
        conversation_key=key,
        contact_key=key,
        type=kind,
        timestamp=float(m["timestamp"]),
        text=text,
        payload=payload,
        contact_name=profile.get("name"),
        contact_attributes={k: v for k, v in attributes.items() if v},
        media=media,
        reply_to=reply_to,
        raw={"message": m, "contact": contact, "phone_number_id": phone_number_id},
    )


def _status_event(channel: ChannelInfo, value: dict[str, Any], s: dict[str, Any]) -> StatusEvent | None:
    status = STATUSES.get(s["status"])
    if status is None:
        log.info("whatsapp status %r ignored", s["status"])
        return None
    phone = s.get("recipient_id")
    contact = _contact_for(value, phone, s.get("recipient_user_id"))
    key = s.get("recipient_user_id") or contact.get("user_id") or phone
    if not key:
        raise ValueError("status has neither a recipient BSUID nor recipient_id")
    errors = s.get("errors") or []
    first = errors[0] if errors else {}
    detail = (first.get("error_data") or {}).get("details") or first.get("message") or first.get("title")
    return StatusEvent(
        channel_id=channel.id,
        tenant_id=channel.tenant_id,
        platform_message_id=s["id"],
        status=status,
        timestamp=float(s["timestamp"]),
        conversation_key=key,
        error_code=str(first["code"]) if "code" in first else None,
        error=detail,
    )


def _preference_commands(channel: ChannelInfo, value: dict[str, Any]) -> list[ConversationCommand]:
    """user_preferences (marketing_messages stop / resume) as commands for the contact's worker."""
    commands = []
    for pref in value.get("user_preferences") or ():
        if pref.get("category") != "marketing_messages" or pref.get("value") not in ("stop", "resume"):
            continue
        key = pref.get("user_id") or pref.get("wa_id")
        if not key:
            raise ValueError("user_preferences entry has neither user_id nor wa_id")
        action = "marketing_stop" if pref["value"] == "stop" else "marketing_resume"
        commands.append(ConversationCommand(channel.id, channel.tenant_id, str(key), action, float(pref["timestamp"])))
    return commands
