"""SQL of the audit log: one row per write through the admin API (ids only, never secrets)."""

from __future__ import annotations

from typing import Any

import asyncpg

INSERT_AUDIT = """
INSERT INTO audit_logs (tenant_id, actor, token_id, action, resource, resource_id, before, after)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
SELECT_AUDIT = """
SELECT id::text, actor, token_id::text, action, resource, resource_id, before, after, created_at
FROM audit_logs
WHERE tenant_id = $1 AND ($2::text IS NULL OR resource = $2)
  AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::uuid))
ORDER BY created_at DESC, id DESC LIMIT $5
"""


async def record(
    conn: asyncpg.Connection,
    tenant_id: str,
    actor: str,
    token_id: str | None,
    action: str,
    resource: str,
    resource_id: str | None,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    await conn.execute(INSERT_AUDIT, tenant_id, actor, token_id, action, resource, resource_id, before, after)


async def page(
    conn: asyncpg.Connection, tenant_id: str, resource: str | None, cursor: tuple[Any, str] | None, limit: int
) -> list[asyncpg.Record]:
    at, last = cursor if cursor else (None, None)
    return list(await conn.fetch(SELECT_AUDIT, tenant_id, resource, at, last, limit))
