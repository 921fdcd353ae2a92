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
