"""Recovery campaigns in a test: a tenant with WhatsApp, Messenger and Telegram channels, a reply flow,
templates and campaigns whose delays are seconds; signed event posts; schedulers in this loop."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from typing import Any

import asyncpg

from engine.channels.meta import signature as meta_signature
from engine.recovery.events import signature
from engine.recovery.scheduler import Scheduler
from tests.harness import Running

SIGNING_KEY = "test-recovery-signing-key"
SHOPIFY_SECRET = "shopify-test-secret"
APP_SECRET = "meta-app-secret"
PHONE_ID = "1065000001"

BUNDLE = """
tenant: {slug: shop, name: Shop, timezone: Europe/Madrid}
bots: [{slug: shop, name: Shop}]
channels:
  - {slug: wa, type: whatsapp, bot: shop, external_id: "PHONE_ID",
     secrets: {access_token: tok, app_secret: APP_SECRET, verify_token: v}}
  - {slug: fb, type: messenger, bot: shop, external_id: "PAGE1",
     secrets: {page_token: tok, app_secret: APP_SECRET, verify_token: v}}
  - {slug: tg, type: telegram, bot: shop, secrets: {bot_token: "1:T", secret_token: s3cret}}
flows:
  - bot: shop
    slug: main
    default: true
    nodes:
      - {id: hello, type: message, text: "Hello from the bot.", next: done}
      - {id: done, type: end}
  - bot: shop
    slug: cart_help
    nodes:
      - id: choice
        type: ask
        prompt: "Want help with your cart?"
        var: choice
        validate: {kind: choice, choices: [{id: "yes", title: "Yes"}, {id: "no", title: "No"}]}
        retries: 0
        next: answer
        fallback: answer
      - {id: answer, type: message, text: "Cart help: you said {{choice | something}}.", next: done}
      - {id: done, type: end}
recovery:
  signing_key: SIGNING_KEY
  shopify_secret: SHOPIFY_SECRET
  languages: [en, es]
  opt_out_reply: "You will get no more offers."
templates:
  - name: cart_reminder
    language: en_US
    category: marketing
    text: "Hi {{1}}, your cart of {{2}} is waiting."
    components:
      - {type: body, parameters: ["{{contact.name | there}}", "{{event.value | currency}}"]}
      - {type: button, sub_type: url, index: 0, parameters: ["{{event.data.token}}"]}
campaigns:
  - slug: cart
    type: cart_abandonment
    triggers: [cart_abandoned, checkout_abandoned]
    max_staleness: 1h
    frequency_cap: FREQ_CAP
    attribution_window: ATTRIBUTION
    CAMPAIGN_EXTRA
    steps:
      - delay: DELAY0
        template: cart_reminder
        text: "Your cart of {{event.value | currency}} is waiting: {{event.data.checkout_url}}"
        reply_flow: {bot: shop, flow: cart_help, node: choice}
      - {delay: DELAY1, text: "Last call for your cart, {{contact.name | friend}}!", template: cart_reminder}
"""


def bundle(
    delay0: str = "1s",
    delay1: str = "2s",
    freq_cap: str = "0s",
    extra: str = "",
    campaign: str = "",
    attribution: str = "1h",
) -> str:
    """The test tenant; campaign: more YAML fields of the `cart` campaign (one line, flow style ok)."""
    text = BUNDLE.replace("CAMPAIGN_EXTRA", campaign or "category: marketing").replace("ATTRIBUTION", attribution)
    for k, v in {"PHONE_ID": PHONE_ID, "APP_SECRET": APP_SECRET, "SIGNING_KEY": SIGNING_KEY,
                 "SHOPIFY_SECRET": SHOPIFY_SECRET, "DELAY0": delay0, "DELAY1": delay1, "FREQ_CAP": freq_cap}.items():  # fmt: skip
        text = text.replace(k, v)
    return text + extra


def cart(source_id: str, customer: dict[str, Any], value: float = 59.9, **extra: Any) -> dict[str, Any]:
    return {
        "type": "cart_abandoned",
        "source": "shop",
        "source_id": source_id,
        "customer": customer,
        "value": value,
        "currency": "EUR",
        "data": {"checkout_url": f"https://shop.example/c/{source_id}", "token": source_id},
        **extra,
    }


def order(source_id: str, customer: dict[str, Any], value: float, at: datetime | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "order_placed", "source": "shop", "source_id": source_id,
                            "customer": customer, "value": value, "currency": "EUR"}  # fmt: skip
    if at is not None:
        body["occurred_at"] = at.isoformat()
    return body


async def post_event(engine: Running, body: dict[str, Any], key: str = SIGNING_KEY) -> tuple[int, dict[str, Any]]:
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "X-Signature-256": signature(key, raw)}
    async with engine.http.post(f"{engine.url}/events/shop", data=raw, headers=headers) as resp:
        return resp.status, await resp.json()


def whatsapp_text(phone: str, text: str, seq: int, name: str = "Ana") -> tuple[bytes, dict[str, str]]:
    """A classic (phone-keyed) WhatsApp text message webhook, signed."""
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": PHONE_ID},
        "contacts": [{"profile": {"name": name}, "wa_id": phone}],
        "messages": [{"from": phone, "id": f"wamid.rec{seq}", "timestamp": str(int(time.time())), "type": "text",
                      "text": {"body": text}}],
    }  # fmt: skip
    doc = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "W", "changes": [{"field": "messages", "value": value}]}],
    }
    raw = json.dumps(doc).encode()
    return raw, {"Content-Type": "application/json", "X-Hub-Signature-256": meta_signature(APP_SECRET, raw)}


def whatsapp_status(phone: str, wamid: str, status: str) -> tuple[bytes, dict[str, str]]:
    value = {"messaging_product": "whatsapp", "metadata": {"phone_number_id": PHONE_ID},
             "statuses": [{"id": wamid, "status": status, "timestamp": str(int(time.time())), "recipient_id": phone}]}  # fmt: skip
    doc = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "W", "changes": [{"field": "messages", "value": value}]}],
    }
    raw = json.dumps(doc).encode()
    return raw, {"Content-Type": "application/json", "X-Hub-Signature-256": meta_signature(APP_SECRET, raw)}


def whatsapp_preference(phone: str, value: str) -> tuple[bytes, dict[str, str]]:
    pref = {"wa_id": phone, "detail": "User requested", "category": "marketing_messages", "value": value,
            "timestamp": int(time.time())}  # fmt: skip
    body = {"messaging_product": "whatsapp", "metadata": {"phone_number_id": PHONE_ID}, "user_preferences": [pref]}
    doc = {"object": "whatsapp_business_account",
           "entry": [{"id": "W", "changes": [{"field": "user_preferences", "value": body}]}]}  # fmt: skip
    raw = json.dumps(doc).encode()
    return raw, {"Content-Type": "application/json", "X-Hub-Signature-256": meta_signature(APP_SECRET, raw)}


async def post_whatsapp(engine: Running, channel_id: str, signed: tuple[bytes, dict[str, str]]) -> int:
    raw, headers = signed
    async with engine.http.post(f"{engine.url}/webhooks/whatsapp/{channel_id}", data=raw, headers=headers) as resp:
        return resp.status


def start_scheduler(engine: Running) -> None:
    engine._start(Scheduler(engine.settings).run)


async def steps(pool: asyncpg.Pool, event_source_id: str | None = None) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        """SELECT m.step, m.status, m.skip_reason, m.kind, m.body, m.replied_at, m.converted_at, m.retry_count,
                  m.conversion_value::float8 AS conversion_value, m.error_code, m.sent_at, m.delivered_at, m.read_at,
                  e.source_id
           FROM recovery_messages m JOIN recovery_events e ON e.id = m.event_id
           WHERE $1::text IS NULL OR e.source_id = $1 ORDER BY e.source_id, m.step""",
        event_source_id,
    )
    return [dict(r) for r in rows]


async def wait_for(check: Any, timeout: float = 30.0, interval: float = 0.1) -> Any:
    async with asyncio.timeout(timeout):
        while not (result := await check()):
            await asyncio.sleep(interval)
        return result
