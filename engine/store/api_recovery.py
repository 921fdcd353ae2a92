"""SQL of the admin API's campaigns, templates and analytics. Writes reuse engine.store.recovery's
upserts (the tenant file's), so the scheduler and the events endpoint see an API change exactly as
they see a file's. Every statement is filtered by tenant ($1) besides row-level security."""

from __future__ import annotations

_CAMPAIGN_COLUMNS = """
id::text, slug, name, campaign_type AS type, category, status, triggers, definition, created_at, updated_at
"""
SELECT_CAMPAIGNS = f"SELECT {_CAMPAIGN_COLUMNS} FROM recovery_campaigns WHERE tenant_id = $1 ORDER BY slug"
SELECT_CAMPAIGN = f"SELECT {_CAMPAIGN_COLUMNS} FROM recovery_campaigns WHERE tenant_id = $1 AND id = $2"
# A campaign is archived, not deleted (as when it leaves the tenant file): its messages and funnel stay.
ARCHIVE_CAMPAIGN = """
UPDATE recovery_campaigns SET status = 'archived', updated_at = now() WHERE tenant_id = $1 AND id = $2
RETURNING id
"""

_TEMPLATE_COLUMNS = """
id::text, name, language, category, components, text, status, platform_id, created_at, updated_at
"""
SELECT_TEMPLATES = f"SELECT {_TEMPLATE_COLUMNS} FROM channel_templates WHERE tenant_id = $1 ORDER BY name, language"
SELECT_TEMPLATE = f"SELECT {_TEMPLATE_COLUMNS} FROM channel_templates WHERE tenant_id = $1 AND id = $2"
# The campaigns (not archived) whose steps name a template that would be gone with this row: no other
# language of the same name remains.
SELECT_TEMPLATE_USERS = """
SELECT c.slug FROM recovery_campaigns c
WHERE c.tenant_id = $1 AND c.status <> 'archived'
  AND EXISTS (SELECT 1 FROM jsonb_array_elements(c.definition -> 'steps') s WHERE s ->> 'template' = $2)
  AND NOT EXISTS (SELECT 1 FROM channel_templates t WHERE t.tenant_id = $1 AND t.name = $2 AND t.id <> $3)
ORDER BY c.slug
"""
DELETE_TEMPLATE = "DELETE FROM channel_templates WHERE tenant_id = $1 AND id = $2 RETURNING id"

SELECT_ANALYTICS = """
SELECT period_start, events, scheduled, sent, delivered, read, replied, converted, skipped,
       revenue_at_risk::float8 AS revenue_at_risk, revenue_recovered::float8 AS revenue_recovered,
       conversion_rate::float8 AS conversion_rate, updated_at
FROM recovery_analytics
WHERE tenant_id = $1 AND campaign_id = $2 AND period = 'day' AND period_start >= $3::date
ORDER BY period_start
"""
