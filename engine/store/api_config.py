"""SQL of the admin API's configuration resources: the tenant, bots, channels, and one rule, flow,
tool, FAQ or document at a time. Every statement is filtered by tenant ($1) besides the row-level
security the API's role runs under. Upserts of whole definitions reuse the tenant file's SQL
(engine.store.definitions)."""

from __future__ import annotations

SELECT_TENANT = "SELECT id::text, slug, name, timezone, created_at, updated_at FROM organizations WHERE id = $1"
UPDATE_TENANT = """
UPDATE organizations SET name = $2, timezone = $3, updated_at = now() WHERE id = $1
RETURNING id::text, slug, name, timezone, created_at, updated_at
"""

_BOT_COLUMNS = """
b.id::text, b.slug, b.name, b.default_flow_id::text, coalesce(c.welcome_text, 'Hello {name}!') AS welcome_text,
coalesce(c.echo, true) AS echo, coalesce(c.settings, '{}'::jsonb) AS settings, b.created_at, b.updated_at
"""
SELECT_BOTS = f"""
SELECT {_BOT_COLUMNS} FROM bots b LEFT JOIN bot_configuration c ON c.bot_id = b.id
WHERE b.tenant_id = $1 ORDER BY b.slug
"""
SELECT_BOT = f"""
SELECT {_BOT_COLUMNS} FROM bots b LEFT JOIN bot_configuration c ON c.bot_id = b.id
WHERE b.tenant_id = $1 AND b.id = $2
"""
SELECT_BOT_SLUGS = "SELECT slug, id::text FROM bots WHERE tenant_id = $1"
DELETE_BOT = "DELETE FROM bots WHERE tenant_id = $1 AND id = $2 RETURNING id::text"

_CHANNEL_COLUMNS = """
ch.id::text, ch.slug, ch.type, ch.bot_id::text, b.slug AS bot, ch.external_id, ch.config, ch.active,
ch.credentials, ch.created_at, ch.updated_at
"""
SELECT_CHANNELS = f"""
SELECT {_CHANNEL_COLUMNS} FROM channels ch LEFT JOIN bots b ON b.id = ch.bot_id
WHERE ch.tenant_id = $1 ORDER BY ch.slug
"""
SELECT_CHANNEL = f"""
SELECT {_CHANNEL_COLUMNS} FROM channels ch LEFT JOIN bots b ON b.id = ch.bot_id
WHERE ch.tenant_id = $1 AND ch.id = $2
"""
SELECT_CHANNEL_SLUGS = "SELECT slug, id::text FROM channels WHERE tenant_id = $1"
DELETE_CHANNEL = "DELETE FROM channels WHERE tenant_id = $1 AND id = $2 RETURNING id::text"

SELECT_RULES = """
SELECT id::text, name, priority, status, conditions, actions, created_at, updated_at FROM routing_rules
WHERE tenant_id = $1 ORDER BY priority, name
"""
SELECT_RULE = """
SELECT id::text, name, priority, status, conditions, actions, created_at, updated_at FROM routing_rules
WHERE tenant_id = $1 AND id = $2
"""
DELETE_RULE = "DELETE FROM routing_rules WHERE tenant_id = $1 AND id = $2 RETURNING id::text"

_FLOW_COLUMNS = """
f.id::text, f.version, f.bot_id::text, b.slug AS bot, f.slug, f.name, f.definition, f.created_at,
(b.default_flow_id = f.id) AS is_default
"""
SELECT_FLOWS = f"""
SELECT DISTINCT ON (f.id) {_FLOW_COLUMNS} FROM bot_flows f JOIN bots b ON b.id = f.bot_id
WHERE f.tenant_id = $1 ORDER BY f.id, f.version DESC
"""
SELECT_FLOW = f"""
SELECT {_FLOW_COLUMNS} FROM bot_flows f JOIN bots b ON b.id = f.bot_id
WHERE f.tenant_id = $1 AND f.id = $2 AND ($3::int IS NULL OR f.version = $3)
ORDER BY f.version DESC LIMIT 1
"""
SELECT_FLOW_VERSIONS = """
SELECT version, name, created_at FROM bot_flows WHERE tenant_id = $1 AND id = $2 ORDER BY version DESC
"""
CLEAR_DEFAULT_FLOW = """
UPDATE bots SET default_flow_id = NULL, updated_at = now() WHERE tenant_id = $1 AND id = $2 AND default_flow_id = $3
"""

SELECT_TOOLS = """
SELECT id::text, slug, kind, config, secrets, created_at, updated_at FROM tools WHERE tenant_id = $1 ORDER BY slug
"""
SELECT_TOOL = """
SELECT id::text, slug, kind, config, secrets, created_at, updated_at FROM tools WHERE tenant_id = $1 AND id = $2
"""
DELETE_TOOL = "DELETE FROM tools WHERE tenant_id = $1 AND id = $2 RETURNING id::text"

_FAQ_COLUMNS = "f.id::text, b.slug AS bot, f.question, f.answer, f.keywords, f.created_at, f.updated_at"
SELECT_FAQS = f"""
SELECT {_FAQ_COLUMNS} FROM faqs f JOIN bots b ON b.id = f.bot_id WHERE f.tenant_id = $1 ORDER BY b.slug, f.question
"""
SELECT_FAQ = f"SELECT {_FAQ_COLUMNS} FROM faqs f JOIN bots b ON b.id = f.bot_id WHERE f.tenant_id = $1 AND f.id = $2"
UPDATE_FAQ = """
UPDATE faqs SET bot_id = $3, question = $4, answer = $5, keywords = $6, updated_at = now()
WHERE tenant_id = $1 AND id = $2
"""
DELETE_FAQ = "DELETE FROM faqs WHERE tenant_id = $1 AND id = $2 RETURNING id::text"

_DOCUMENT_COLUMNS = """
d.id::text, b.slug AS bot, d.slug, d.title, d.body, d.url, d.language::text AS language, d.created_at, d.updated_at
"""
SELECT_DOCUMENTS = f"""
SELECT {_DOCUMENT_COLUMNS} FROM kb_documents d JOIN bots b ON b.id = d.bot_id
WHERE d.tenant_id = $1 ORDER BY b.slug, d.slug
"""
SELECT_DOCUMENT = f"""
SELECT {_DOCUMENT_COLUMNS} FROM kb_documents d JOIN bots b ON b.id = d.bot_id WHERE d.tenant_id = $1 AND d.id = $2
"""
DELETE_DOCUMENT = "DELETE FROM kb_documents WHERE tenant_id = $1 AND id = $2 RETURNING id::text"
