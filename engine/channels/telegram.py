"""Telegram Bot API: webhook updates in, sendMessage / answerCallbackQuery out.

Auth is a plain shared secret in X-Telegram-Bot-Api-Secret-Token (set with setWebhook). The dedupe
key is update_id; a conversation is a chat (plus a forum topic when there is one).
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp

from engine.channels.base import (
    Event,
    MalformedBody,
    Unauthorized,
    WebhookReply,
    WebhookRequest,
    load_json,
    post,
    same_secret,
)
from engine.models import (
    ChannelInfo,
    ChannelType,
    InboundEvent,
    MessageType,
    OutboundMessage,
    SendError,
    SendResult,
)

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# Media keys of a Telegram message, in the order we look for them.
MEDIA_KEYS = ("photo", "video", "audio", "voice", "document", "sticker", "animation", "video_note")
MAX_TEXT = 4096


class TelegramChannel:
    types: tuple[ChannelType, ...] = (ChannelType.TELEGRAM,)

    def handshake(self, request: WebhookRequest, channel: ChannelInfo) -> WebhookReply | None:
        return None  # Telegram has no inbound handshake: setWebhook registers the URL.

    def verify(self, request: WebhookRequest, channel: ChannelInfo) -> None:
        expected = channel.secrets.get("secret_token", "")
        given = request.headers.get(SECRET_HEADER, "")
        if not same_secret(given, expected):
            raise Unauthorized("missing or wrong X-Telegram-Bot-Api-Secret-Token")

    def parse(self, request: WebhookRequest, channel: ChannelInfo) -> list[Event]:
        update = load_json(request.body)
        if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
            raise MalformedBody("a Telegram update is an object with an integer update_id")
        try:
            if "message" in update:
                return [_message_event(channel, update, update["message"], edited=False)]
            if "edited_message" in update:
                return [_message_event(channel, update, update["edited_message"], edited=True)]
            if "callback_query" in update:
                return [_callback_event(channel, update, update["callback_query"])]
        except (KeyError, TypeError) as exc:
            raise MalformedBody(f"Telegram update lacks a required field: {exc}") from None
        return []

    async def send(
        self, http: aiohttp.ClientSession, base_url: str, channel: ChannelInfo, message: OutboundMessage
    ) -> SendResult:
        token = channel.secrets["bot_token"]
        if message.kind == "answer_callback":
            body: dict[str, Any] = {"callback_query_id": message.reply_to["callback_query_id"]}
            await _call(http, f"{base_url}/bot{token}/answerCallbackQuery", body)
            return SendResult(platform_message_id=None)
        body = {"chat_id": message.reply_to["chat_id"], "text": message.text[:MAX_TEXT]}
        if thread := message.reply_to.get("message_thread_id"):
            body["message_thread_id"] = thread
        if message.buttons:
            body["reply_markup"] = {
                "inline_keyboard": [[{"text": b.title, "callback_data": b.id}] for b in message.buttons]
            }
        try:
            result = await _call(http, f"{base_url}/bot{token}/sendMessage", body)
        except ChatMigrated as migrated:
            # The group became a supergroup with a new id: the same message goes there, once (§2.6).
            log.info("telegram chat migrated; resending to the new chat id")
            body["chat_id"] = migrated.new_chat_id
            result = await _call(http, f"{base_url}/bot{token}/sendMessage", body)
        return SendResult(platform_message_id=str(result["message_id"]))


class ChatMigrated(SendError):
    """400 with parameters.migrate_to_chat_id: the group was upgraded to a supergroup."""

    def __init__(self, message: str, new_chat_id: int) -> None:
        super().__init__(message, code="migrated", retryable=False)
        self.new_chat_id = new_chat_id


def _conversation_key(chat: dict[str, Any], thread_id: object) -> str:
    return f"{chat['id']}:{thread_id}" if thread_id else str(chat["id"])


def _sender(message: dict[str, Any]) -> dict[str, Any]:
    sender: dict[str, Any] = message.get("from") or message["chat"]
    return sender


def _display_name(user: dict[str, Any]) -> str | None:
    name = " ".join(p for p in (user.get("first_name"), user.get("last_name")) if p)
    return name or user.get("username") or user.get("title")


def _message_event(
    channel: ChannelInfo, update: dict[str, Any], message: dict[str, Any], *, edited: bool
) -> InboundEvent:
    chat = message["chat"]
    user = _sender(message)
    thread_id = message.get("message_thread_id") if message.get("is_topic_message") else None
    kind, text, media = MessageType.TEXT, message.get("text"), None
    for key in MEDIA_KEYS:
        if key in message:
            item = message[key][-1] if key == "photo" else message[key]  # photo: largest size last
            kind, text = MessageType.MEDIA, message.get("caption")
            media = {"kind": key, "id": item["file_id"], "mime_type": item.get("mime_type")}
            break
    else:
        if "location" in message:
            kind, media = MessageType.LOCATION, dict(message["location"])
        elif "contact" in message:
            kind, media = MessageType.CONTACTS, {"contacts": [message["contact"]]}
        elif text is None:
            kind = MessageType.UNSUPPORTED
    reply_to: dict[str, Any] = {"chat_id": chat["id"], "message_id": message["message_id"]}
    if thread_id:
        reply_to["message_thread_id"] = thread_id
    return InboundEvent(
        channel_id=channel.id,
        tenant_id=channel.tenant_id,
        channel_type=ChannelType.TELEGRAM,
        event_id=str(update["update_id"]),
        conversation_key=_conversation_key(chat, thread_id),
        contact_key=str(user["id"]),
        type=kind,
        timestamp=float(message["edit_date"] if edited else message["date"]),
        text=text,
        contact_name=_display_name(user),
        contact_attributes={"username": user["username"]} if user.get("username") else {},
        media=media,
        reply_to=reply_to,
        raw={"update_id": update["update_id"], "edited": edited, "message": message},
    )


def _callback_event(channel: ChannelInfo, update: dict[str, Any], query: dict[str, Any]) -> InboundEvent:
    user = query["from"]
    origin = query.get("message") or {}
    chat = origin.get("chat") or {"id": user["id"]}
    thread_id = origin.get("message_thread_id") if origin.get("is_topic_message") else None
    reply_to: dict[str, Any] = {"chat_id": chat["id"], "callback_query_id": query["id"]}
    if thread_id:
        reply_to["message_thread_id"] = thread_id
    return InboundEvent(
        channel_id=channel.id,
        tenant_id=channel.tenant_id,
        channel_type=ChannelType.TELEGRAM,
        event_id=str(update["update_id"]),
        conversation_key=_conversation_key(chat, thread_id),
        contact_key=str(user["id"]),
        type=MessageType.BUTTON,
        timestamp=float(origin.get("date") or 0),
        text=None,
        payload=query.get("data"),
        contact_name=_display_name(user),
        reply_to=reply_to,
        raw={"update_id": update["update_id"], "callback_query": query},
    )


async def _call(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST one Bot API method; map its error answer onto SendError (channels.md §2.6)."""
    answer = await post(http, "telegram", url, json=body)
    status, data = answer.status, answer.data
    if data is None:
        raise SendError(f"telegram answered {status} without a JSON body", code=str(status), retryable=True)
    if isinstance(data, dict) and data.get("ok"):
        result: dict[str, Any] = data["result"] if isinstance(data.get("result"), dict) else {}
        return result
    code = int(data.get("error_code", status)) if isinstance(data, dict) else status
    description = str(data.get("description", "")) if isinstance(data, dict) else ""
    params = (data.get("parameters") or {}) if isinstance(data, dict) else {}
    if code == 429:
        raise SendError(description, code="429", retryable=True, retry_after=float(params.get("retry_after", 1)))
    if params.get("migrate_to_chat_id"):
        raise ChatMigrated(description, int(params["migrate_to_chat_id"]))
    raise SendError(description or f"HTTP {status}", code=str(code), retryable=code >= 500)
