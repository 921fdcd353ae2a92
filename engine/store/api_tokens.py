"""SQL of API tokens: created, listed and revoked by `engine token` (the owner role), checked by the
API through api_token_authenticate() (sql/0008_admin_api.sql), which runs as the table's owner
because a token is looked up before its tenant is known."""

from __future__ import annotations

from datetime import datetime

import asyncpg

INSERT_TOKEN = """
INSERT INTO api_tokens (id, tenant_id, name, prefix, token_hash, scopes, created_by, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
SELECT_TOKENS = """
SELECT t.id::text, o.slug AS tenant, t.name, t.prefix, t.scopes, t.created_by, t.created_at, t.last_used_at,
       t.expires_at, t.revoked_at
FROM api_tokens t JOIN organizations o ON o.id = t.tenant_id
WHERE ($1::uuid IS NULL OR t.tenant_id = $1)
ORDER BY o.slug, t.created_at
"""
REVOKE_TOKEN = """
UPDATE api_tokens SET revoked_at = now()
WHERE (id::text = $1 OR prefix = $1) AND revoked_at IS NULL
RETURNING id::text, prefix
"""
SELECT_TENANT_BY_SLUG = "SELECT id::text FROM organizations WHERE slug = $1"
AUTHENTICATE = """
SELECT id::text, tenant_id::text, name, prefix, scopes, expires_at, revoked_at FROM api_token_authenticate($1)
"""


async def insert(
    conn: asyncpg.Connection,
    token_id: str,
    tenant_id: str,
    name: str,
    prefix: str,
    digest: bytes,
    scopes: list[str],
    created_by: str,
    expires_at: datetime | None,
) -> None:
    await conn.execute(INSERT_TOKEN, token_id, tenant_id, name, prefix, digest, scopes, created_by, expires_at)


async def tenant_id(conn: asyncpg.Connection, slug: str) -> str | None:
    found: str | None = await conn.fetchval(SELECT_TENANT_BY_SLUG, slug)
    return found


async def list_tokens(conn: asyncpg.Connection, tenant_id: str | None) -> list[asyncpg.Record]:
    return list(await conn.fetch(SELECT_TOKENS, tenant_id))


async def revoke(conn: asyncpg.Connection, id_or_prefix: str) -> list[asyncpg.Record]:
    return list(await conn.fetch(REVOKE_TOKEN, id_or_prefix))


async def authenticate(conn: asyncpg.Connection, digest: bytes) -> asyncpg.Record | None:
    return await conn.fetchrow(AUTHENTICATE, digest)
