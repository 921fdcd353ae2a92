"""The knowledge a bot reads while it runs: full-text search over its documents, and its memories.

kb_search ORs the query's words (plainto_tsquery ANDs them, which misses most chat questions) and
ranks with ts_rank_cd over the GIN-indexed generated tsvector (sql/0002_brain.sql).
"""

from __future__ import annotations

from typing import Any, TypeAlias

import asyncpg

SEARCH_DOCUMENTS = """
WITH q AS (
    SELECT replace(plainto_tsquery($3::regconfig, $4)::text, ' & ', ' | ')::tsquery AS query
)
SELECT d.id::text, d.slug, d.title, d.url,
       ts_headline(d.language, d.body, q.query, 'MaxFragments=1, MaxWords=40, MinWords=15') AS snippet,
       ts_rank_cd(d.search, q.query) AS rank
FROM kb_documents d, q
WHERE d.tenant_id = $1 AND d.bot_id = $2 AND d.language = $3::regconfig
  AND q.query::text <> '' AND d.search @@ q.query
ORDER BY rank DESC, d.slug
LIMIT $5
"""
SELECT_MEMORY = "SELECT value FROM bot_memories WHERE bot_id = $1 AND scope = $2 AND key = $3"
UPSERT_MEMORY = """
INSERT INTO bot_memories (tenant_id, bot_id, scope, key, value) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (bot_id, scope, key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
"""
BOT_SCOPE = "*"

Executor: TypeAlias = asyncpg.Pool | asyncpg.Connection  # either runs a statement


async def search_documents(
    db: Executor, tenant_id: str, bot_id: str, query: str, *, language: str = "english", limit: int = 3
) -> list[dict[str, Any]]:
    """Best documents first: [{id, slug, title, url, snippet, rank}]; [] for a query with no words."""
    rows = await db.fetch(SEARCH_DOCUMENTS, tenant_id, bot_id, language, query, limit)
    return [dict(r) for r in rows]


async def get_memory(db: Executor, bot_id: str, scope: str, key: str) -> Any:
    return await db.fetchval(SELECT_MEMORY, bot_id, scope, key)


async def set_memory(db: Executor, tenant_id: str, bot_id: str, scope: str, key: str, value: Any) -> None:
    """Idempotent: setting the same value twice leaves one row with that value."""
    await db.execute(UPSERT_MEMORY, tenant_id, bot_id, scope, key, value)
