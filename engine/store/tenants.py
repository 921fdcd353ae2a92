"""Tenant rows written by `engine load`: the organization, its bots and their configuration, its
channels (credentials already encrypted by the caller). Upserts change a row only when it differs,
so loading the same file twice writes nothing. Callers own the transaction."""

from __future__ import annotations

from typing import Any

import asyncpg

UPSERT_TENANT = """
INSERT INTO organizations (id, slug, name, timezone) VALUES ($1, $2, $3, $4)
ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, timezone = EXCLUDED.timezone, updated_at = now()
WHERE (organizations.name, organizations.timezone) IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.timezone)
"""
UPSERT_BOT = """
INSERT INTO bots (id, tenant_id, slug, name) VALUES ($1, $2, $3, $4)
ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, updated_at = now()
WHERE bots.name IS DISTINCT FROM EXCLUDED.name
"""
UPSERT_BOT_CONFIG = """
INSERT INTO bot_configuration (bot_id, tenant_id, welcome_text, echo, settings) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (bot_id) DO UPDATE SET welcome_text = EXCLUDED.welcome_text, echo = EXCLUDED.echo,
    settings = EXCLUDED.settings, updated_at = now()
WHERE (bot_configuration.welcome_text, bot_configuration.echo, bot_configuration.settings)
      IS DISTINCT FROM (EXCLUDED.welcome_text, EXCLUDED.echo, EXCLUDED.settings)
"""
SELECT_CHANNEL_CREDENTIALS = "SELECT credentials FROM channels WHERE id = $1"
TENANT_EXISTS = "SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1)"
UPSERT_CHANNEL = """
INSERT INTO channels (id, tenant_id, bot_id, slug, type, external_id, credentials, config, active)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (id) DO UPDATE SET bot_id = EXCLUDED.bot_id, type = EXCLUDED.type,
    external_id = EXCLUDED.external_id, credentials = EXCLUDED.credentials, config = EXCLUDED.config,
    active = EXCLUDED.active, updated_at = now()
WHERE (channels.bot_id, channels.type, channels.external_id, channels.credentials, channels.config, channels.active)
      IS DISTINCT FROM (EXCLUDED.bot_id, EXCLUDED.type, EXCLUDED.external_id, EXCLUDED.credentials,
                        EXCLUDED.config, EXCLUDED.active)
"""


async def tenant_exists(conn: asyncpg.Connection, tenant_id: str) -> bool:
    return bool(await conn.fetchval(TENANT_EXISTS, tenant_id))


async def upsert_tenant(conn: asyncpg.Connection, tenant_id: str, slug: str, name: str, timezone: str) -> None:
    await conn.execute(UPSERT_TENANT, tenant_id, slug, name, timezone)


async def upsert_bot(
    conn: asyncpg.Connection,
    bot_id: str,
    tenant_id: str,
    slug: str,
    name: str,
    welcome_text: str,
    echo: bool,
    settings: dict[str, Any],
) -> None:
    await conn.execute(UPSERT_BOT, bot_id, tenant_id, slug, name)
    await conn.execute(UPSERT_BOT_CONFIG, bot_id, tenant_id, welcome_text, echo, settings)


async def channel_credentials(conn: asyncpg.Connection, channel_id: str) -> bytes | None:
    value: bytes | None = await conn.fetchval(SELECT_CHANNEL_CREDENTIALS, channel_id)
    return value


async def upsert_channel(
    conn: asyncpg.Connection,
    channel_id: str,
    tenant_id: str,
    bot_id: str | None,
    slug: str,
    channel_type: str,
    external_id: str | None,
    credentials: bytes,
    config: dict[str, Any],
    active: bool,
) -> None:
    await conn.execute(
        UPSERT_CHANNEL, channel_id, tenant_id, bot_id, slug, channel_type, external_id, credentials, config, active
    )
