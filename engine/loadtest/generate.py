"""`engine loadtest generate`: synthetic conversations in each platform's own webhook shapes.

N conversations per platform, M messages each; a conversation starts at a uniform time within
`spread` seconds and waits an exponential think time (mean `think`) between messages. A share of the
messages are button presses (Telegram inline keyboard, WhatsApp reply button, Messenger quick reply,
Slack block action); WhatsApp conversations also get status callbacks (delivered, read) for the bot's
replies. Bodies have the shapes engine.channels parses; ids are placeholders the replay rewrites.
Deterministic for a given seed.
"""

from __future__ import annotations

import json
import random
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from engine.loadtest.records import Record

FORM = "application/x-www-form-urlencoded"
TEXTS = (
    "hi", "hello", "hey there", "good morning", "where is my order?", "order status", "12345", "54321",
    "How long does shipping take?", "can I return an item?", "which payment methods do you accept?",
    "thanks!", "ok", "great, thank you", "do you ship to Portugal?", "is this in stock?", "what are your hours?",
    "my parcel has not arrived", "I want to change my address", "can I pay with PayPal?", "bye",
    "¿tienen envío a Madrid?", "merci beaucoup", "👍", "one more question", "what is the warranty?",
)  # fmt: skip
BUTTONS = (("orders", "Order status"), ("faq", "Questions"), ("agent", "Talk to a person"))
NAMES = ("Ann", "Ben", "Cleo", "Dan", "Eve", "Finn", "Gus", "Hana", "Ivan", "Jo", "Kai", "Lena")


@dataclass(frozen=True, slots=True)
class GenerateOptions:
    platforms: Sequence[str] = ("telegram",)
    conversations: int = 100  # per platform
    messages: int = 5  # per conversation
    think: float = 2.0  # mean seconds between one person's messages
    spread: float = 10.0  # conversations start within this many seconds
    buttons: float = 0.15  # share of messages that are button presses
    statuses: float = 1.0  # WhatsApp: share of messages followed by delivered + read callbacks
    texts: Sequence[str] = TEXTS
    seed: int = 1


class _Ids:
    def __init__(self) -> None:
        self.n = 0

    def next(self) -> int:
        self.n += 1
        return self.n


def _dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()  # escaped unicode, as Meta sends it


def _telegram(chat: int, name: str, text: str, button: tuple[str, str] | None, t: float, ids: _Ids) -> list[Record]:
    user = {"id": chat, "is_bot": False, "first_name": name}
    stamp = 1_700_000_000 + int(t)
    if button:
        origin = {"message_id": ids.next(), "date": stamp, "chat": {"id": chat, "type": "private"}, "text": "Menu"}
        query = {"id": str(ids.next()), "from": user, "message": origin, "chat_instance": "1", "data": button[0]}
        doc: dict[str, Any] = {"update_id": ids.next(), "callback_query": query}
    else:
        doc = {"update_id": ids.next(), "message": {"message_id": ids.next(), "date": stamp, "text": text,
               "from": user, "chat": {"id": chat, "type": "private", "first_name": name}}}  # fmt: skip
    return [Record(t, "telegram", str(chat), _dumps(doc), kind="button" if button else "message")]


def _whatsapp_value(**parts: Any) -> bytes:
    metadata = {"display_phone_number": "15550001111", "phone_number_id": "PHONE_NUMBER_ID"}
    value = {"messaging_product": "whatsapp", "metadata": metadata, **parts}
    doc = {"object": "whatsapp_business_account",
           "entry": [{"id": "WABA_ID", "changes": [{"field": "messages", "value": value}]}]}  # fmt: skip
    return _dumps(doc)


def _whatsapp(
    chat: int, name: str, text: str, button: tuple[str, str] | None, t: float, ids: _Ids, statuses: bool
) -> list[Record]:
    wa_id = str(chat)
    message: dict[str, Any] = {"from": wa_id, "id": f"wamid.GEN{ids.next()}", "timestamp": str(1_700_000_000 + int(t))}
    if button:
        reply = {"id": button[0], "title": button[1]}
        message.update(type="interactive", interactive={"type": "button_reply", "button_reply": reply})
    else:
        message.update(type="text", text={"body": text})
    contacts = [{"profile": {"name": name}, "wa_id": wa_id}]
    out = [Record(t, "whatsapp", wa_id, _whatsapp_value(contacts=contacts, messages=[message]),
                  kind="button" if button else "message")]  # fmt: skip
    if statuses:
        reply_id = f"wamid.OUT{ids.next()}"  # the bot's reply, as the platform would name it
        for delay, status in ((0.4, "delivered"), (2.5, "read")):
            body = {"id": reply_id, "status": status, "timestamp": str(1_700_000_000 + int(t + delay)),
                    "recipient_id": wa_id}  # fmt: skip
            out.append(Record(t + delay, "whatsapp", wa_id, _whatsapp_value(statuses=[body]), kind="status"))
    return out


def _messenger(
    platform: str, chat: int, text: str, button: tuple[str, str] | None, t: float, ids: _Ids
) -> list[Record]:
    psid = f"{chat}"
    stamp = int((1_700_000_000 + t) * 1000)
    message: dict[str, Any] = {"mid": f"m_GEN{ids.next()}", "text": button[1] if button else text}
    if button:
        message["quick_reply"] = {"payload": button[0]}
    item = {"sender": {"id": psid}, "recipient": {"id": "PAGE_ID"}, "timestamp": stamp, "message": message}
    doc = {"object": "instagram" if platform == "instagram" else "page",
           "entry": [{"id": "PAGE_ID", "time": stamp, "messaging": [item]}]}  # fmt: skip
    return [Record(t, platform, psid, _dumps(doc), kind="button" if button else "message")]


def _slack(chat: int, text: str, button: tuple[str, str] | None, t: float, ids: _Ids) -> list[Record]:
    channel, user = f"D{chat}", f"U{chat}"
    ts = f"{1_700_000_000 + int(t)}.{ids.next():06d}"
    if button:
        payload = {"type": "block_actions", "user": {"id": user, "name": user}, "team": {"id": "TEAM_ID"},
                   "channel": {"id": channel},
                   "container": {"type": "message", "channel_id": channel, "message_ts": ts},
                   "message": {"ts": ts, "text": "Menu"}, "trigger_id": "1.2.3",
                   "actions": [{"action_id": f"0:{button[0]}", "block_id": "buttons", "value": button[0],
                                "text": {"type": "plain_text", "text": button[1]}, "type": "button",
                                "action_ts": ts}]}  # fmt: skip
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        return [Record(t, "slack", channel, body, content_type=FORM, kind="button")]
    doc = {"token": "x", "team_id": "TEAM_ID", "api_app_id": "A1", "type": "event_callback",
           "event_id": f"EvGEN{ids.next()}", "event_time": 1_700_000_000 + int(t),
           "event": {"type": "message", "channel": channel, "channel_type": "im", "user": user, "text": text,
                     "ts": ts, "event_ts": ts}}  # fmt: skip
    return [Record(t, "slack", channel, _dumps(doc), kind="message")]


def generate(options: GenerateOptions) -> Iterator[Record]:
    """Every request of the synthetic traffic, in time order."""
    rng = random.Random(options.seed)
    ids = _Ids()
    records: list[Record] = []
    for p_index, platform in enumerate(options.platforms):
        for c in range(options.conversations):
            chat = 100_000 + p_index * 10_000_000 + c  # distinct per platform and conversation
            name = NAMES[c % len(NAMES)]
            t = rng.uniform(0, options.spread)
            for m in range(options.messages):
                if m:
                    t += rng.expovariate(1 / options.think) if options.think > 0 else 0.0
                text = rng.choice(options.texts)
                button = rng.choice(BUTTONS) if m and rng.random() < options.buttons else None
                if platform == "telegram":
                    records += _telegram(chat, name, text, button, t, ids)
                elif platform == "whatsapp":
                    records += _whatsapp(chat, name, text, button, t, ids, rng.random() < options.statuses)
                elif platform in ("messenger", "instagram"):
                    records += _messenger(platform, chat, text, button, t, ids)
                else:
                    records += _slack(chat, text, button, t, ids)
    records.sort(key=lambda r: r.t)
    yield from records
