"""The admin API in tests: two tenants, tokens, and a small client."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg

from engine.admin import tokens
from engine.models import stable_id

TENANT_FILE = """
tenant: {slug: SLUG, name: NAME, timezone: Europe/Berlin}
bots: [{slug: shop, name: Shop bot}]
channels:
  - {slug: tg, type: telegram, bot: shop, external_id: SLUG_bot, secrets: {bot_token: "1:TOKEN", secret_token: s3cret}}
rules:
  - {name: agent, priority: 1, conditions: {all: [{status: bot}, {contains: [agent]}]},
     actions: [{handoff: {queue: support, text: "Connecting you with an agent."}}]}
flows:
  - bot: shop
    slug: main
    default: true
    nodes:
      - {id: greet, type: message, text: "You said {{message.text}}", next: done}
      - {id: done, type: end}
tools:
  - {slug: lookup, url: "https://example.com/{{secret.key}}", secrets: {key: tool-secret-value}}
faqs:
  - {bot: shop, question: "When are you open?", answer: "Always.", keywords: [open]}
documents:
  - {bot: shop, slug: returns, title: Returns, body: "Returns are free within 30 days."}
templates:
  - {name: cart_reminder, language: en_US, text: "Your cart is waiting.", components: [{type: body}]}
campaigns:
  - {slug: cart, triggers: [cart_abandoned], steps: [{delay: 1h, template: cart_reminder, text: "Still there?"}]}
"""


def tenant_file(slug: str) -> str:
    return TENANT_FILE.replace("SLUG", slug).replace("NAME", slug.title())


async def make_token(
    pool: asyncpg.Pool, tenant: str, scopes: str = "read,write,agent", expires_at: datetime | None = None
) -> str:
    async with pool.acquire() as conn:
        new = await tokens.create(conn, tenant, tokens.parse_scopes(scopes), name=f"{tenant}-test",
                                  expires_at=expires_at, created_by="test")  # fmt: skip
    return new.token


async def seed_conversation(
    pool: asyncpg.Pool, tenant_slug: str, key: str, status: str = "bot", messages: int = 3, minutes_ago: int = 0
) -> str:
    """A conversation with a contact and `messages` alternating inbound/outbound rows, written as the
    workers would (the owner role)."""
    tenant = str(stable_id("tenant", tenant_slug))
    channel = str(stable_id(tenant, "channel", "tg"))
    contact = str(stable_id(channel, "contact", key))
    conversation = str(stable_id(channel, "conversation", key))
    at = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    await pool.execute(
        "INSERT INTO channel_contacts (id, tenant_id, channel_id, external_id, name, attributes, last_seen_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7)", contact, tenant, channel, key, f"Contact {key}", {"tier": "gold"}, at,
    )  # fmt: skip
    await pool.execute(
        "INSERT INTO conversations (id, tenant_id, channel_id, contact_id, external_key, status, last_message_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7)", conversation, tenant, channel, contact, key, status, at,
    )  # fmt: skip
    for i in range(messages):
        direction = "inbound" if i % 2 == 0 else "outbound"
        await pool.execute(
            "INSERT INTO message_history (id, tenant_id, channel_id, conversation_id, direction, sender, "
            "message_type, text, payload, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'text', $7, $8, $9)",
            str(uuid.uuid4()), tenant, channel, conversation, direction, key if direction == "inbound" else "bot",
            f"message {i}", {"reply_to": {"chat_id": int(key)}} if direction == "inbound" else {},
            at - timedelta(seconds=messages - i),
        )  # fmt: skip
    return conversation


async def seed_recovery(pool: asyncpg.Pool, tenant_slug: str, contact_key: str) -> None:
    """A recovery event of the tenant's `cart` campaign with a step, its funnel row, the contact's
    opt-out, the tenant's recovery settings and a source delivery, written as the engine would (the
    owner role); contact_key names a contact seed_conversation made."""
    tenant = str(stable_id("tenant", tenant_slug))
    channel = str(stable_id(tenant, "channel", "tg"))
    contact = str(stable_id(channel, "contact", contact_key))
    campaign = str(stable_id(tenant, "recovery-campaign", "cart"))
    event = str(stable_id(tenant, "event", contact_key))
    now = datetime.now(UTC)
    await pool.execute(
        "INSERT INTO recovery_events (id, tenant_id, event_type, source, source_id, contact_id, channel_id, value, "
        "currency, status, occurred_at, expires_at) VALUES ($1, $2, 'cart_abandoned', 'shop', $3, $4, $5, 10, 'EUR', "
        "'scheduled', $6::timestamptz, $6::timestamptz + interval '1 day')", event, tenant, contact_key, contact, channel, now,
    )  # fmt: skip
    await pool.execute(
        "INSERT INTO recovery_messages (id, tenant_id, campaign_id, event_id, step, contact_id, channel_id, "
        "scheduled_at) VALUES ($1, $2, $3, $4, 0, $5, $6, $7::timestamptz + interval '1 hour')",
        str(uuid.uuid4()), tenant, campaign, event, contact, channel, now,
    )  # fmt: skip
    await pool.execute(
        "INSERT INTO recovery_analytics (tenant_id, campaign_id, period, period_start, events) "
        "VALUES ($1, $2, 'day', $3, 1)", tenant, campaign, now.date(),
    )  # fmt: skip
    await pool.execute(
        "INSERT INTO contact_preferences (contact_id, tenant_id, marketing_opt_out, source, changed_at) "
        "VALUES ($1, $2, true, 'keyword', $3)", contact, tenant, now,
    )  # fmt: skip
    await pool.execute("INSERT INTO recovery_settings (tenant_id, stop_words) VALUES ($1, '{stop}')", tenant)
    await pool.execute(
        "INSERT INTO recovery_deliveries (tenant_id, source, delivery_id) VALUES ($1, 'shopify', $2)", tenant, event
    )


@dataclass
class Api:
    """Calls /api/v1 of an engine at base_url."""

    http: aiohttp.ClientSession
    base_url: str

    async def call(
        self, method: str, path: str, token: str | None, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        kwargs: dict[str, Any] = {"headers": all_headers}
        if body is not None:
            kwargs["json"] = body
        async with self.http.request(method, f"{self.base_url}/api/v1{path}", **kwargs) as resp:
            data = await resp.json() if resp.content_type == "application/json" else await resp.text()
            return resp.status, data, dict(resp.headers)
