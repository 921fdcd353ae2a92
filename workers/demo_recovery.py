"""The recovery part of `engine demo`: a cart abandoned by a customer the bot never talked to, the
template reminder (outside the 24 h window), the customer's reply answered by the campaign's flow,
the second reminder skipped because they replied, an order credited to the reminder, and the funnel.

The example campaign's delays come from the environment (CART_FIRST_DELAY, CART_SECOND_DELAY; the
demo sets seconds), and its send window is opened to the whole day so the demo runs at any hour.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg

from engine.admin.tenant_file import Bundle, channel_id, tenant_id
from engine.loadtest import traffic
from engine.models import ChannelType
from engine.recovery.events import signature
from engine.recovery.report import format_funnel, funnel
from engine.settings import Settings
from engine.store.pool import create_pool

# Set before `engine load` reads the example tenant (its ${...} defaults are production values).
ENVIRONMENT = {"CART_FIRST_DELAY": "2s", "CART_SECOND_DELAY": "3s", "CART_SEND_FROM": "00:00",
               "CART_SEND_UNTIL": "24:00"}  # fmt: skip
PHONE = 34600000000 + int(time.time()) % 1_000_000  # a new customer each run (the frequency cap is per contact)
CUSTOMER = {"phone": f"+{PHONE}", "name": "Gina"}
SELECT_STEPS = """
SELECT m.step, m.status, m.skip_reason, m.kind, m.body, m.replied_at IS NOT NULL AS replied
FROM recovery_messages m JOIN recovery_events e ON e.id = m.event_id
WHERE e.tenant_id = $1 AND e.source_id = $2 ORDER BY m.step
"""
SELECT_REPLIES = """
SELECT h.text FROM message_history h JOIN conversations v ON v.id = h.conversation_id
WHERE v.channel_id = $1 AND v.external_key = $2 AND h.direction = 'outbound' AND h.sender = 'bot'
ORDER BY h.created_at
"""


async def _until(check: Callable[[], Awaitable[Any]], limit: float = 30.0) -> Any:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.2)
    raise TimeoutError("the recovery demo did not progress")


async def _post_event(http: aiohttp.ClientSession, receiver: str, tenant: str, key: str, body: dict[str, Any]) -> Any:
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "X-Signature-256": signature(key, raw)}
    async with http.post(f"{receiver}/events/{tenant}", data=raw, headers=headers) as resp:
        print(f"  POST /events/{tenant} {body['type']} {body['source_id']} -> {resp.status}")
        return await resp.json()


async def run(settings: Settings, receiver: str, bundle: Bundle, check_alive: Callable[[], None]) -> None:
    tenant = bundle.tenant.slug
    tid = tenant_id(tenant)
    assert bundle.recovery is not None
    key = str(bundle.recovery["signing_key"])
    wa = next(c for c in bundle.channels if c.type is ChannelType.WHATSAPP)
    wa_id = channel_id(tid, wa.slug)
    cart_id = f"cart-{int(time.time())}"
    pool = await create_pool(settings.database_url)
    try:
        async with aiohttp.ClientSession() as http:
            print("\n=== recovery: an abandoned cart")
            cart = {"type": "cart_abandoned", "source": "demo-shop", "source_id": cart_id, "customer": CUSTOMER,
                    "value": 89.90, "currency": "EUR",
                    "data": {"checkout_url": "https://shop.example.com/cart", "token": cart_id}}  # fmt: skip
            await _post_event(http, receiver, tenant, key, cart)

            async def step_sent(step: int) -> list[asyncpg.Record] | None:
                check_alive()
                rows = await pool.fetch(SELECT_STEPS, tid, cart_id)
                return rows if len(rows) > step and rows[step]["status"] not in ("pending", "queued") else None

            rows = await _until(lambda: step_sent(0))
            print(f"  reminder 1 sent as a {rows[0]['kind']} (Gina never wrote: outside the 24 h window)")
            print(f"    bot (template cart_reminder): {rows[0]['body']}")

            hook = traffic.whatsapp(wa_id, wa.secrets, wa.external_id or "", int(time.time()), PHONE, "Gina",
                                    "yes", bsuid=False)  # fmt: skip
            async with http.post(receiver + hook.path, data=hook.body, headers=hook.headers) as resp:
                print(f"  Gina replies 'yes' on WhatsApp -> {resp.status}")

            async def flow_answer() -> list[str] | None:
                texts = [r["text"] for r in await pool.fetch(SELECT_REPLIES, wa_id, str(PHONE))]
                return texts or None

            for text in await _until(flow_answer):
                print(f"    bot (flow cart_help): {text}")
            rows = await _until(lambda: step_sent(1))
            print(f"  reminder 2: {rows[1]['status']} ({rows[1]['skip_reason']}): she replied, so the sequence stops")

            order = {"type": "order_placed", "source": "demo-shop", "source_id": f"order-{cart_id}",
                     "customer": CUSTOMER, "value": 74.50, "currency": "EUR"}  # fmt: skip
            answer = await _post_event(http, receiver, tenant, key, order)
            credited = "credited to reminder 1" if answer.get("credited_message") else "not credited"
            print(f"  order of €74.50 {credited} (the order's value counts, not the cart's)")

        rows = await funnel(pool, tenant, None, (datetime.now(UTC) - timedelta(days=1)).date())
        print(f"\n=== recovery funnel ({tenant}, since yesterday; `engine recovery report {tenant}`)")
        for line in format_funnel(rows or []):
            print(f"  {line}")
    finally:
        await pool.close()
