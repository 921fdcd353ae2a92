"""Webhook requests exactly as each platform would send them, signed with the channel's secrets.

Used by the demo and by load generators: one function per platform turns (chat, name, text) into
the path, raw body and headers of the platform's POST (channels.md's documented shapes).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from engine.models import ChannelType


@dataclass(frozen=True, slots=True)
class SignedWebhook:
    path: str
    body: bytes
    headers: dict[str, str]


def _meta_headers(app_secret: str, body: bytes) -> dict[str, str]:
    signature = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Hub-Signature-256": f"sha256={signature}"}


def telegram(channel_id: str, secrets: dict[str, str], seq: int, chat: int, name: str, text: str) -> SignedWebhook:
    user = {"id": chat, "is_bot": False, "first_name": name}
    update = {
        "update_id": seq,
        "message": {"message_id": seq, "date": int(time.time()), "text": text, "from": user,
                    "chat": {"id": chat, "type": "private", "first_name": name}},
    }  # fmt: skip
    headers = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": secrets["secret_token"]}
    return SignedWebhook(f"/webhooks/telegram/{channel_id}", json.dumps(update).encode(), headers)


def whatsapp(
    channel_id: str, secrets: dict[str, str], phone_number_id: str, seq: int, chat: int, name: str, text: str,
    bsuid: bool = True,
) -> SignedWebhook:  # fmt: skip
    """bsuid False: a classic webhook that names the user by phone number only."""
    wa_id = str(chat)
    contact: dict[str, object] = {"profile": {"name": name}, "wa_id": wa_id}
    message: dict[str, object] = {"from": wa_id, "id": f"wamid.demo{seq}", "timestamp": str(int(time.time())),
                                  "type": "text", "text": {"body": text}}  # fmt: skip
    if bsuid:
        contact["user_id"] = message["from_user_id"] = f"US.{chat}"
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": phone_number_id},
        "contacts": [contact],
        "messages": [message],
    }
    doc = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": value}]}],
    }
    body = json.dumps(doc).encode()
    return SignedWebhook(f"/webhooks/whatsapp/{channel_id}", body, _meta_headers(secrets["app_secret"], body))


def messenger(
    kind: ChannelType, channel_id: str, secrets: dict[str, str], page_id: str, seq: int, chat: int, text: str
) -> SignedWebhook:
    event = {"sender": {"id": f"PSID{chat}"}, "recipient": {"id": page_id}, "timestamp": int(time.time() * 1000),
             "message": {"mid": f"m_demo{seq}", "text": text}}  # fmt: skip
    obj = "instagram" if kind is ChannelType.INSTAGRAM else "page"
    doc = {"object": obj, "entry": [{"id": page_id, "time": event["timestamp"], "messaging": [event]}]}
    body = json.dumps(doc).encode()
    return SignedWebhook(f"/webhooks/{kind.value}/{channel_id}", body, _meta_headers(secrets["app_secret"], body))


def slack(channel_id: str, secrets: dict[str, str], team: str, seq: int, chat: int, text: str) -> SignedWebhook:
    ts = f"{int(time.time())}.{seq:06d}"
    doc = {"token": "demo", "team_id": team, "api_app_id": "A1", "type": "event_callback", "event_id": f"Ev{seq}",
           "event_time": int(time.time()), "event": {"type": "message", "channel": f"D{chat}", "channel_type": "im",
           "user": f"U{chat}", "text": text, "ts": ts, "event_ts": ts}}  # fmt: skip
    body = json.dumps(doc).encode()
    stamp = str(int(time.time()))
    sig = hmac.new(secrets["signing_secret"].encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={sig}"}
    return SignedWebhook(f"/webhooks/slack/{channel_id}", body, headers)


def for_channel(
    kind: ChannelType, channel_id: str, external_id: str | None, secrets: dict[str, str], seq: int, chat: int,
    name: str, text: str,
) -> SignedWebhook:  # fmt: skip
    """One inbound text message from `name` in `chat`, as `kind` would deliver it."""
    if kind is ChannelType.TELEGRAM:
        return telegram(channel_id, secrets, seq, chat, name, text)
    if kind is ChannelType.WHATSAPP:
        return whatsapp(channel_id, secrets, external_id or "", seq, chat, name, text)
    if kind in (ChannelType.MESSENGER, ChannelType.INSTAGRAM):
        return messenger(kind, channel_id, secrets, external_id or "", seq, chat, text)
    if kind is ChannelType.SLACK:
        return slack(channel_id, secrets, external_id or "", seq, chat, text)
    raise ValueError(f"no webhook shape for {kind}")
