"""SQL of the brain's definitions: what workers load (all tenants at start, one tenant on a
notification) and what `engine load` writes. Callers own the transaction.

The SELECT_* queries take $1 = a tenant id, or NULL for every tenant, so one constant serves the
start-up load and the reload of a single tenant.
"""

from __future__ import annotations

from typing import Any

import asyncpg

SELECT_TENANTS = "SELECT id::text, timezone FROM organizations WHERE ($1::uuid IS NULL OR id = $1)"
SELECT_BOTS = """
SELECT b.id::text, b.tenant_id::text, b.slug, b.default_flow_id::text,
       coalesce(c.welcome_text, 'Hello {name}!') AS welcome_text, coalesce(c.echo, true) AS echo
FROM bots b LEFT JOIN bot_configuration c ON c.bot_id = b.id
WHERE ($1::uuid IS NULL OR b.tenant_id = $1)
"""
SELECT_CHANNELS = """
SELECT id::text, tenant_id::text, slug, type, bot_id::text FROM channels
WHERE ($1::uuid IS NULL OR tenant_id = $1)
"""
SELECT_RULES = """
SELECT tenant_id::text, name, priority, status, conditions, actions FROM routing_rules
WHERE ($1::uuid IS NULL OR tenant_id = $1)
"""
SELECT_LATEST_FLOWS = """
SELECT DISTINCT ON (id) id::text, version, tenant_id::text, bot_id::text, slug, definition FROM bot_flows
WHERE ($1::uuid IS NULL OR tenant_id = $1)
ORDER BY id, version DESC
"""
SELECT_FLOW_VERSION = """
SELECT id::text, version, tenant_id::text, bot_id::text, slug, definition FROM bot_flows
WHERE id = $1 AND version = $2
"""
SELECT_TOOLS = """
SELECT id::text, tenant_id::text, slug, kind, config, secrets FROM tools WHERE ($1::uuid IS NULL OR tenant_id = $1)
"""
SELECT_FAQS = """
SELECT tenant_id::text, bot_id::text, question, answer, keywords FROM faqs
WHERE ($1::uuid IS NULL OR tenant_id = $1) ORDER BY question
"""

# --- writes (engine load) -------------------------------------------------------------------------------
UPSERT_RULE = """
INSERT INTO routing_rules (id, tenant_id, name, priority, conditions, actions, status)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (id) DO UPDATE SET priority = EXCLUDED.priority, conditions = EXCLUDED.conditions,
    actions = EXCLUDED.actions, status = EXCLUDED.status, updated_at = now()
WHERE (routing_rules.priority, routing_rules.conditions, routing_rules.actions, routing_rules.status)
      IS DISTINCT FROM (EXCLUDED.priority, EXCLUDED.conditions, EXCLUDED.actions, EXCLUDED.status)
"""
DELETE_RULES_EXCEPT = "DELETE FROM routing_rules WHERE tenant_id = $1 AND NOT (id = any($2::uuid[]))"
SELECT_LATEST_FLOW = "SELECT version, definition FROM bot_flows WHERE id = $1 ORDER BY version DESC LIMIT 1"
INSERT_FLOW_VERSION = """
INSERT INTO bot_flows (id, version, tenant_id, bot_id, slug, name, definition)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""
SET_DEFAULT_FLOW = """
UPDATE bots SET default_flow_id = $2, updated_at = now()
WHERE id = $1 AND default_flow_id IS DISTINCT FROM $2
"""
CLEAR_OTHER_DEFAULT_FLOWS = """
UPDATE bots SET default_flow_id = NULL, updated_at = now()
WHERE tenant_id = $1 AND default_flow_id IS NOT NULL AND NOT (id = any($2::uuid[]))
"""
SELECT_TOOL_SECRETS = "SELECT secrets FROM tools WHERE id = $1"
UPSERT_TOOL = """
INSERT INTO tools (id, tenant_id, slug, kind, config, secrets) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind, config = EXCLUDED.config, secrets = EXCLUDED.secrets,
    updated_at = now()
WHERE (tools.kind, tools.config, tools.secrets) IS DISTINCT FROM (EXCLUDED.kind, EXCLUDED.config, EXCLUDED.secrets)
"""
DELETE_TOOLS_EXCEPT = "DELETE FROM tools WHERE tenant_id = $1 AND NOT (id = any($2::uuid[]))"
UPSERT_FAQ = """
INSERT INTO faqs (id, tenant_id, bot_id, question, answer, keywords) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (id) DO UPDATE SET answer = EXCLUDED.answer, keywords = EXCLUDED.keywords, updated_at = now()
WHERE (faqs.answer, faqs.keywords) IS DISTINCT FROM (EXCLUDED.answer, EXCLUDED.keywords)
"""
DELETE_FAQS_EXCEPT = "DELETE FROM faqs WHERE tenant_id = $1 AND NOT (id = any($2::uuid[]))"
UPSERT_DOCUMENT = """
INSERT INTO kb_documents (id, tenant_id, bot_id, slug, title, body, url, language)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::regconfig)
ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, body = EXCLUDED.body, url = EXCLUDED.url,
    language = EXCLUDED.language, updated_at = now()
WHERE (kb_documents.title, kb_documents.body, kb_documents.url, kb_documents.language)
      IS DISTINCT FROM (EXCLUDED.title, EXCLUDED.body, EXCLUDED.url, EXCLUDED.language)
"""
DELETE_DOCUMENTS_EXCEPT = "DELETE FROM kb_documents WHERE tenant_id = $1 AND NOT (id = any($2::uuid[]))"
SELECT_TEXT_SEARCH_CONFIGS = "SELECT cfgname::text FROM pg_ts_config"


async def fetch_all(conn: asyncpg.Pool | asyncpg.Connection, tenant_id: str | None) -> dict[str, list[Any]]:
    """Every definition row of one tenant (or of all of them), keyed by table."""
    queries = {
        "tenants": SELECT_TENANTS,
        "bots": SELECT_BOTS,
        "channels": SELECT_CHANNELS,
        "rules": SELECT_RULES,
        "flows": SELECT_LATEST_FLOWS,
        "tools": SELECT_TOOLS,
        "faqs": SELECT_FAQS,
    }
    return {name: await conn.fetch(sql, tenant_id) for name, sql in queries.items()}


async def fetch_flow_version(
    conn: asyncpg.Pool | asyncpg.Connection, flow_id: str, version: int
) -> asyncpg.Record | None:
    return await conn.fetchrow(SELECT_FLOW_VERSION, flow_id, version)
