"""All SQL of recovery campaigns: settings, templates and campaigns (tenant file), events in,
the scheduler's claim, the sender's and the worker's updates, attribution and the funnel.

Callers hold transactions where several statements must commit together (an event and its first
steps; a claim and what it decided). Every write is idempotent: unique keys per (tenant, source,
source id) and per (campaign, event, step) turn a retry into a no-op.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from engine.store import columns
from engine.store.pool import plan_per_call

# --- tenant file ----------------------------------------------------------------------------------

SELECT_SETTINGS_SECRETS = "SELECT secrets FROM recovery_settings WHERE tenant_id = $1"
UPSERT_SETTINGS = """
INSERT INTO recovery_settings (tenant_id, secrets, stop_words, resume_words, opt_out_reply)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (tenant_id) DO UPDATE SET secrets = EXCLUDED.secrets, stop_words = EXCLUDED.stop_words,
    resume_words = EXCLUDED.resume_words, opt_out_reply = EXCLUDED.opt_out_reply, updated_at = now()
WHERE (recovery_settings.secrets, recovery_settings.stop_words, recovery_settings.resume_words,
       recovery_settings.opt_out_reply)
      IS DISTINCT FROM (EXCLUDED.secrets, EXCLUDED.stop_words, EXCLUDED.resume_words, EXCLUDED.opt_out_reply)
"""
SELECT_TEMPLATE_NAMES = "SELECT DISTINCT name FROM channel_templates WHERE tenant_id = $1"
UPSERT_TEMPLATE = """
INSERT INTO channel_templates (id, tenant_id, name, language, category, components, text, status, platform_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (id) DO UPDATE SET category = EXCLUDED.category, components = EXCLUDED.components,
    text = EXCLUDED.text, status = EXCLUDED.status, platform_id = EXCLUDED.platform_id, updated_at = now()
WHERE (channel_templates.category, channel_templates.components, channel_templates.text,
       channel_templates.status, channel_templates.platform_id)
      IS DISTINCT FROM (EXCLUDED.category, EXCLUDED.components, EXCLUDED.text, EXCLUDED.status, EXCLUDED.platform_id)
"""
DELETE_TEMPLATES_EXCEPT = "DELETE FROM channel_templates WHERE tenant_id = $1 AND NOT (id = any($2::uuid[]))"
UPSERT_CAMPAIGN = """
INSERT INTO recovery_campaigns (id, tenant_id, slug, name, campaign_type, category, status, triggers, definition)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, campaign_type = EXCLUDED.campaign_type,
    category = EXCLUDED.category, status = EXCLUDED.status, triggers = EXCLUDED.triggers,
    definition = EXCLUDED.definition, updated_at = now()
WHERE (recovery_campaigns.name, recovery_campaigns.campaign_type, recovery_campaigns.category,
       recovery_campaigns.status, recovery_campaigns.triggers, recovery_campaigns.definition)
      IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.campaign_type, EXCLUDED.category, EXCLUDED.status,
                        EXCLUDED.triggers, EXCLUDED.definition)
"""
# A campaign removed from the file is archived, not deleted: its messages and funnel stay.
ARCHIVE_CAMPAIGNS_EXCEPT = """
UPDATE recovery_campaigns SET status = 'archived', updated_at = now()
WHERE tenant_id = $1 AND NOT (id = any($2::uuid[])) AND status <> 'archived'
"""
SELECT_FLOW_NODES = """
SELECT DISTINCT ON (id) bot_id::text, slug, definition FROM bot_flows WHERE tenant_id = $1 ORDER BY id, version DESC
"""

# --- events in ------------------------------------------------------------------------------------

SELECT_TENANT = """
SELECT o.id::text, o.timezone, s.secrets FROM organizations o
LEFT JOIN recovery_settings s ON s.tenant_id = o.id
WHERE o.slug = $1
"""
INSERT_DELIVERY = """
INSERT INTO recovery_deliveries (tenant_id, source, delivery_id) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING RETURNING delivery_id
"""
SELECT_CHANNEL_BY_TYPE = """
SELECT id::text, type FROM channels WHERE tenant_id = $1 AND type = $2 AND active ORDER BY slug LIMIT 1
"""
SELECT_CHANNEL_BY_SLUG = "SELECT id::text, type FROM channels WHERE tenant_id = $1 AND slug = $2 AND active"
# A person known by phone or email: the channel contact seen most recently (their last channel).
SELECT_CONTACT_BY_ATTRIBUTE = """
SELECT k.id::text, k.channel_id::text, c.type FROM channel_contacts k JOIN channels c ON c.id = k.channel_id
WHERE k.tenant_id = $1 AND k.attributes ->> $2 = $3 AND c.active AND ($4::text IS NULL OR c.type = $4)
ORDER BY k.last_seen_at DESC LIMIT 1
"""
# A contact that never wrote: created so the scheduler and, later, the worker find one row.
INSERT_CONTACT = """
INSERT INTO channel_contacts (id, tenant_id, channel_id, external_id, name, attributes, last_seen_at)
VALUES ($1, $2, $3, $4, $5, $6, '-infinity')
ON CONFLICT (id) DO NOTHING
"""
INSERT_EVENT = """
INSERT INTO recovery_events (id, tenant_id, event_type, source, source_id, contact_id, channel_id, customer, value,
                             currency, event_data, status, occurred_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::timestamptz,
        $13::timestamptz + make_interval(secs => $14::float8))
ON CONFLICT (tenant_id, source, source_id) DO NOTHING
RETURNING id::text
"""
# A Shopify checkout updated again: it is still idle only from its latest update, so its pending
# first steps move with it. completed_at set: it is no longer abandoned (converted, steps cancelled).
UPDATE_CHECKOUT = """
UPDATE recovery_events SET event_data = $3, value = coalesce($4, value), currency = coalesce($5, currency),
    occurred_at = greatest(occurred_at, $6), updated_at = now(),
    status = CASE WHEN $7 AND status IN ('received', 'scheduled') THEN 'converted' ELSE status END
WHERE tenant_id = $1 AND source = 'shopify' AND source_id = $2 AND occurred_at <= $6
RETURNING id::text, occurred_at
"""
RESCHEDULE_FIRST_STEPS = """
UPDATE recovery_messages m
SET scheduled_at = $2::timestamptz + make_interval(secs => (c.definition -> 'steps' -> 0 ->> 'delay')::float8),
    updated_at = now()
FROM recovery_campaigns c
WHERE m.event_id = $1 AND m.step = 0 AND m.status = 'pending' AND c.id = m.campaign_id
"""
CANCEL_PENDING_FOR_EVENT = """
UPDATE recovery_messages SET status = 'cancelled', skip_reason = 'converted', updated_at = now()
WHERE event_id = $1 AND status = 'pending'
"""
SELECT_CAMPAIGNS_FOR = """
SELECT id::text, slug, category, definition FROM recovery_campaigns
WHERE tenant_id = $1 AND status = 'active' AND $2 = any(triggers)
ORDER BY slug
"""
SELECT_CONTACT_CONTEXT = """
SELECT k.attributes, k.channel_id::text, c.type AS channel_type,
       (SELECT coalesce(array_agg(DISTINCT t), '{}') FROM conversations v, unnest(v.tags) t
        WHERE v.contact_id = k.id) AS tags
FROM channel_contacts k JOIN channels c ON c.id = k.channel_id WHERE k.id = $1
"""
INSERT_MESSAGE = """
INSERT INTO recovery_messages (id, tenant_id, campaign_id, event_id, step, contact_id, channel_id, status, skip_reason,
                               scheduled_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (campaign_id, event_id, step) DO NOTHING
"""
SET_EVENT_STATUS = "UPDATE recovery_events SET status = $2, updated_at = now() WHERE id = $1 AND status = $3"

# An order: the last recovery message sent to the contact within its campaign's attribution window
# (last touch) is credited, once, with the order's value; its event becomes recovered.
ATTRIBUTE_ORDER = """
WITH last AS (
    SELECT m.id, m.event_id FROM recovery_messages m
    JOIN recovery_campaigns c ON c.id = m.campaign_id
    JOIN recovery_events e ON e.id = m.event_id
    WHERE m.tenant_id = $1 AND m.contact_id = $2 AND m.sent_at IS NOT NULL AND m.converted_at IS NULL
      AND m.sent_at <= $3 AND m.sent_at >= $3 - make_interval(secs => (c.definition ->> 'attribution_window')::float8)
      AND e.status <> 'recovered'
    ORDER BY m.sent_at DESC LIMIT 1
    FOR UPDATE OF m
), credited AS (
    UPDATE recovery_messages m SET converted_at = $3, conversion_value = $4, order_event_id = $5, updated_at = now()
    FROM last WHERE m.id = last.id
    RETURNING m.id, m.event_id
), recovered AS (
    UPDATE recovery_events e SET status = 'recovered', recovered_at = $3, recovered_value = $4, order_event_id = $5,
        updated_at = now()
    FROM credited WHERE e.id = credited.event_id
    RETURNING e.id
)
SELECT credited.id::text FROM credited
"""
# Whatever else the contact had open before the order is converted (no credit): its steps stop.
CONVERT_OPEN_EVENTS = """
UPDATE recovery_events SET status = 'converted', updated_at = now()
WHERE tenant_id = $1 AND contact_id = $2 AND status IN ('received', 'scheduled') AND occurred_at <= $3
  AND event_type <> 'order_placed'
"""

# --- the scheduler --------------------------------------------------------------------------------

CLAIM_DUE = """
SELECT id::text FROM recovery_messages
WHERE status = 'pending' AND scheduled_at <= now()
ORDER BY scheduled_at
LIMIT $1
FOR UPDATE SKIP LOCKED
"""
# Claim-time checks that span events (the frequency cap) must see what another scheduler decided for
# the same contact: a transaction-scoped lock per contact, taken in a fixed order (no deadlock),
# before the context is read.
LOCK_CONTACTS = """
SELECT count(pg_advisory_xact_lock(7010, hashtext(c))) FROM (
    SELECT DISTINCT contact_id::text AS c FROM recovery_messages
    WHERE id = any($1::uuid[]) AND contact_id IS NOT NULL ORDER BY 1) x
"""
NEXT_DUE = "SELECT extract(epoch FROM min(scheduled_at)) FROM recovery_messages WHERE status = 'pending'"
# Everything the claim-time checks need, for a whole batch, in one round trip.
SELECT_CLAIM_CONTEXT = """
SELECT m.id::text, m.tenant_id::text, m.campaign_id::text, m.event_id::text, m.step, m.scheduled_at, m.retry_count,
       m.contact_id::text, m.channel_id::text,
       c.status AS campaign_status, c.category, c.definition,
       e.event_type, e.status AS event_status, e.source_id, e.occurred_at, e.expires_at, e.value::float8 AS value,
       e.currency, e.event_data, e.customer,
       o.timezone AS tenant_timezone,
       k.external_id AS contact_key, k.name AS contact_name, k.attributes,
       ch.type AS channel_type, ch.external_id AS channel_external_id, ch.active AS channel_active,
       coalesce(p.marketing_opt_out, false) AS opted_out,
       (SELECT max(h.created_at) FROM conversations v JOIN message_history h ON h.conversation_id = v.id
        WHERE v.contact_id = m.contact_id AND v.channel_id = m.channel_id AND h.direction = 'inbound')
           AS last_inbound_at,
       EXISTS (SELECT 1 FROM recovery_messages r WHERE r.event_id = m.event_id AND r.replied_at IS NOT NULL)
           AS replied,
       (SELECT count(*) FROM recovery_messages r WHERE r.event_id = m.event_id
        AND r.status IN ('queued', 'sent', 'delivered', 'read')) AS sent_for_event,
       (SELECT max(r.queued_at) FROM recovery_messages r WHERE r.contact_id = m.contact_id
        AND r.event_id <> m.event_id AND r.queued_at IS NOT NULL) AS last_other_at,
       (SELECT row_to_json(x) FROM (SELECT v.id::text, v.external_key, v.tags FROM conversations v
        WHERE v.contact_id = m.contact_id AND v.channel_id = m.channel_id
        ORDER BY v.last_message_at DESC LIMIT 1) x) AS conversation
FROM recovery_messages m
JOIN recovery_campaigns c ON c.id = m.campaign_id
JOIN recovery_events e ON e.id = m.event_id
JOIN organizations o ON o.id = m.tenant_id
LEFT JOIN channel_contacts k ON k.id = m.contact_id
LEFT JOIN channels ch ON ch.id = m.channel_id
LEFT JOIN contact_preferences p ON p.contact_id = m.contact_id
WHERE m.id = any($1::uuid[])
"""
# A step that prefers another platform: the same person's contact there, found by phone or email.
SWITCH_CONTACT = """
UPDATE recovery_messages SET contact_id = $2, channel_id = $3, updated_at = now() WHERE id = $1 AND status = 'pending'
"""
SELECT_TEMPLATES = """
SELECT name, language, category, components, text, status FROM channel_templates
WHERE tenant_id = $1 AND name = any($2::text[])
"""
# The contact's conversation when it never wrote: keyed like the platform keys a direct chat.
INSERT_CONVERSATION = """
INSERT INTO conversations (id, tenant_id, channel_id, contact_id, external_key, bot_id, last_message_at)
SELECT $1, $2, $3, $4, $5, c.bot_id, now() FROM channels c WHERE c.id = $3
ON CONFLICT DO NOTHING
"""
INSERT_OUTBOUND = """
INSERT INTO channel_messages (id, tenant_id, channel_id, conversation_id, message_history_id, body, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT DO NOTHING
"""
INSERT_OUTBOUND_HISTORY = """
INSERT INTO message_history (id, tenant_id, channel_id, conversation_id, direction, sender, message_type, text,
                             payload, created_at)
VALUES ($1, $2, $3, $4, 'outbound', 'recovery', $5, $6, $7, $8)
ON CONFLICT DO NOTHING
"""
# The contact's recovery_queued_at moves with it: the worker's cue to look for a reply (MARK_REPLIED).
MARK_QUEUED = """
WITH queued AS (
    UPDATE recovery_messages SET status = 'queued', claimed_at = now(), queued_at = now(), conversation_id = $2,
        channel_message_id = $3, channel_message_at = $4, kind = $5, template_name = $6, body = $7,
        updated_at = now()
    WHERE id = $1 AND status = 'pending'
    RETURNING contact_id, queued_at)
UPDATE channel_contacts k SET recovery_queued_at = greatest(k.recovery_queued_at, q.queued_at)
FROM queued q WHERE k.id = q.contact_id
"""
MARK_SKIPPED = """
UPDATE recovery_messages SET status = 'skipped', skip_reason = $2, claimed_at = now(), updated_at = now()
WHERE id = $1 AND status = 'pending'
"""
RESCHEDULE = """
UPDATE recovery_messages SET scheduled_at = $2, claimed_at = now(), updated_at = now()
WHERE id = $1 AND status = 'pending'
"""
# conversation_unanswered: a conversation of the bot that has waited on a node (an ask) for longer
# than the campaign says, with its contact silent since. One event per wait (keyed on its start).
SELECT_UNANSWERED = """
SELECT v.id::text AS conversation_id, v.contact_id::text, v.channel_id::text,
       extract(epoch FROM v.last_message_at)::bigint AS since, v.last_message_at
FROM conversations v
WHERE v.tenant_id = $1 AND v.status = 'bot' AND v.flow_id IS NOT NULL AND v.node_id IS NOT NULL
  AND v.last_message_at < now() - make_interval(secs => $2) AND v.last_message_at > now() - interval '7 days'
ORDER BY v.last_message_at LIMIT 500
"""
SELECT_UNANSWERED_CAMPAIGNS = """
SELECT tenant_id::text, (definition ->> 'unanswered_after')::float8 AS after FROM recovery_campaigns
WHERE status = 'active' AND 'conversation_unanswered' = any(triggers)
"""

# --- the sender and the status receipts -----------------------------------------------------------

MARK_SENT = """
UPDATE recovery_messages r SET status = CASE WHEN delivery_rank(m.status) > delivery_rank(r.status)
                                             THEN m.status ELSE r.status END,
    sent_at = coalesce(r.sent_at, m.sent_at, now()), delivered_at = coalesce(r.delivered_at, m.delivered_at),
    read_at = coalesce(r.read_at, m.read_at), updated_at = now()
FROM channel_messages m
WHERE r.id = $1 AND m.id = r.channel_message_id AND m.created_at = r.channel_message_at
  AND r.status IN ('queued', 'sent', 'delivered')
"""
MARK_FAILED = """
UPDATE recovery_messages SET status = 'failed', failed_at = now(), error_code = $2, error = $3, skip_reason = $4,
    updated_at = now()
WHERE id = $1 AND status = 'queued'
"""
# 131049 (the per-user marketing cap): try again later, a bounded number of times.
RETRY_LATER = """
UPDATE recovery_messages SET status = 'pending', scheduled_at = now() + make_interval(secs => $2),
    retry_count = retry_count + 1, error_code = $3, error = $4, updated_at = now()
WHERE id = $1 AND status = 'queued' AND retry_count < $5
RETURNING id
"""
APPLY_RECEIPTS = """
UPDATE recovery_messages r SET
    status = CASE WHEN r.status IN ('sent', 'delivered') AND delivery_rank(u.status) > delivery_rank(r.status)
                  THEN u.status ELSE r.status END,
    delivered_at = CASE WHEN u.status IN ('delivered', 'read') THEN coalesce(r.delivered_at, u.at)
                        ELSE r.delivered_at END,
    read_at = CASE WHEN u.status = 'read' THEN coalesce(r.read_at, u.at) ELSE r.read_at END,
    updated_at = now()
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[]) AS u(channel_id, platform_message_id, status, at)
JOIN channel_messages m ON m.channel_id = u.channel_id AND m.platform_message_id = u.platform_message_id
WHERE r.channel_message_id = m.id AND u.status IN ('delivered', 'read')
"""

# --- the worker: replies and opt-outs -------------------------------------------------------------

# A contact's message after a recovery message marks the latest one sent to it (within the window) replied.
REPLY_WINDOW = timedelta(days=7)
MARK_REPLIED = """
UPDATE recovery_messages r SET replied_at = u.at, updated_at = now()
FROM (SELECT DISTINCT ON (u.contact_id) u.contact_id, u.at, m.id
      FROM unnest($1::uuid[], $2::timestamptz[]) AS u(contact_id, at)
      JOIN recovery_messages m ON m.contact_id = u.contact_id
      WHERE m.queued_at IS NOT NULL AND m.queued_at <= u.at AND m.queued_at > u.at - $3::interval
        AND m.status IN ('queued', 'sent', 'delivered', 'read')
      ORDER BY u.contact_id, m.queued_at DESC) u
WHERE r.id = u.id AND r.replied_at IS NULL
"""
UPSERT_PREFERENCES = """
INSERT INTO contact_preferences (contact_id, tenant_id, marketing_opt_out, source, changed_at)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bool[], $4::text[], $5::timestamptz[])
ON CONFLICT (contact_id) DO UPDATE SET marketing_opt_out = EXCLUDED.marketing_opt_out, source = EXCLUDED.source,
    changed_at = EXCLUDED.changed_at
WHERE contact_preferences.changed_at <= EXCLUDED.changed_at
"""
SELECT_STOP_WORDS = "SELECT stop_words, resume_words, opt_out_reply FROM recovery_settings WHERE tenant_id = $1"

# --- the funnel -----------------------------------------------------------------------------------

# Recomputed from the events and messages (idempotent), per campaign and day of the event.
REFRESH_ANALYTICS = """
WITH per_event AS (
    SELECT m.tenant_id, m.campaign_id, e.id AS event_id, date_trunc('day', e.occurred_at)::date AS day,
           coalesce(e.value, 0) AS value,
           bool_or(m.converted_at IS NOT NULL) AS converted,
           sum(m.conversion_value) AS recovered
    FROM recovery_messages m JOIN recovery_events e ON e.id = m.event_id
    WHERE m.tenant_id = $1 AND e.occurred_at >= $2
    GROUP BY m.tenant_id, m.campaign_id, e.id
), per_message AS (
    SELECT m.campaign_id, date_trunc('day', e.occurred_at)::date AS day,
           count(*) AS scheduled,
           count(*) FILTER (WHERE m.sent_at IS NOT NULL) AS sent,
           count(*) FILTER (WHERE m.delivered_at IS NOT NULL) AS delivered,
           count(*) FILTER (WHERE m.read_at IS NOT NULL) AS read,
           count(*) FILTER (WHERE m.replied_at IS NOT NULL) AS replied
    FROM recovery_messages m JOIN recovery_events e ON e.id = m.event_id
    WHERE m.tenant_id = $1 AND e.occurred_at >= $2
    GROUP BY m.campaign_id, 2
), skips AS (
    SELECT campaign_id, day, jsonb_object_agg(reason, n) AS skipped FROM (
        SELECT m.campaign_id, date_trunc('day', e.occurred_at)::date AS day,
               coalesce(m.skip_reason, m.status) AS reason, count(*) AS n
        FROM recovery_messages m JOIN recovery_events e ON e.id = m.event_id
        WHERE m.tenant_id = $1 AND e.occurred_at >= $2 AND m.status IN ('skipped', 'cancelled', 'failed')
        GROUP BY 1, 2, 3) s
    GROUP BY campaign_id, day
), events AS (
    SELECT tenant_id, campaign_id, day, count(*) AS events, count(*) FILTER (WHERE converted) AS converted,
           sum(value) AS at_risk, coalesce(sum(recovered), 0) AS recovered
    FROM per_event GROUP BY tenant_id, campaign_id, day
)
INSERT INTO recovery_analytics (tenant_id, campaign_id, period, period_start, events, scheduled, sent, delivered, read,
                                replied, converted, skipped, revenue_at_risk, revenue_recovered, conversion_rate,
                                updated_at)
SELECT ev.tenant_id, ev.campaign_id, 'day', ev.day, ev.events, pm.scheduled, pm.sent, pm.delivered, pm.read, pm.replied,
       ev.converted, coalesce(sk.skipped, '{}'), ev.at_risk, ev.recovered,
       round(ev.converted::numeric / greatest(ev.events, 1), 4), now()
FROM events ev
JOIN per_message pm ON pm.campaign_id = ev.campaign_id AND pm.day = ev.day
LEFT JOIN skips sk ON sk.campaign_id = ev.campaign_id AND sk.day = ev.day
ON CONFLICT (campaign_id, period, period_start) DO UPDATE SET
    events = EXCLUDED.events, scheduled = EXCLUDED.scheduled, sent = EXCLUDED.sent, delivered = EXCLUDED.delivered,
    read = EXCLUDED.read, replied = EXCLUDED.replied, converted = EXCLUDED.converted, skipped = EXCLUDED.skipped,
    revenue_at_risk = EXCLUDED.revenue_at_risk, revenue_recovered = EXCLUDED.revenue_recovered,
    conversion_rate = EXCLUDED.conversion_rate, updated_at = now()
"""
SELECT_TENANTS_WITH_CAMPAIGNS = "SELECT DISTINCT tenant_id::text FROM recovery_campaigns"
SELECT_FUNNEL = """
SELECT c.slug, c.name, sum(a.events)::int AS events, sum(a.scheduled)::int AS scheduled, sum(a.sent)::int AS sent,
       sum(a.delivered)::int AS delivered, sum(a.read)::int AS read, sum(a.replied)::int AS replied,
       sum(a.converted)::int AS converted, sum(a.revenue_at_risk)::float8 AS revenue_at_risk,
       sum(a.revenue_recovered)::float8 AS revenue_recovered,
       (SELECT coalesce(jsonb_object_agg(k, n), '{}') FROM (
            SELECT k, sum(v::int) AS n FROM recovery_analytics a2, jsonb_each_text(a2.skipped) AS s(k, v)
            WHERE a2.campaign_id = c.id AND a2.period_start >= $2::date GROUP BY k) x) AS skipped
FROM recovery_campaigns c JOIN recovery_analytics a ON a.campaign_id = c.id
WHERE c.tenant_id = $1 AND a.period_start >= $2::date AND ($3::text IS NULL OR c.slug = $3)
GROUP BY c.id, c.slug, c.name
ORDER BY c.slug
"""
SELECT_TENANT_ID = "SELECT id::text FROM organizations WHERE slug = $1"


async def flush_worker_effects(
    conn: asyncpg.Connection,
    replies: Sequence[tuple[str, datetime]],
    queued_at: Mapping[str, datetime | None],
    preferences: dict[str, tuple[str, bool, str, datetime]],
) -> None:
    """The worker's part, inside its batch transaction: replies to recovery messages and opt-outs.
    replies: (contact id, at); queued_at: {contact id: its recovery_queued_at}, as the contact upsert
    returned it; preferences: {contact id: (tenant id, opted out, source, at)}."""
    replies = [(contact, at) for contact, at in replies if may_reply(contact, at, queued_at)]
    if replies:
        # Planned once, it could read every queued recovery message (made while there were few).
        await plan_per_call(conn)
        await conn.execute(MARK_REPLIED, *columns(replies, 2), REPLY_WINDOW)
    if preferences:
        rows = [(contact, *values) for contact, values in preferences.items()]
        await conn.execute(UPSERT_PREFERENCES, *columns(rows, 5))


def may_reply(contact: str, at: datetime, queued_at: Mapping[str, datetime | None]) -> bool:
    """Whether a message from the contact at `at` can answer a recovery message: one was queued to it
    within the window before. A contact the batch did not upsert is looked for all the same."""
    if contact not in queued_at:
        return True
    last = queued_at[contact]
    return last is not None and last > at - REPLY_WINDOW


async def apply_receipts(conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Delivered/read receipts (channel id, platform id, status, at, ...) onto recovery messages."""
    receipts = [r[:4] for r in rows if r[2] in ("delivered", "read")]
    if receipts:
        await plan_per_call(conn)  # as MARK_REPLIED: it joins recovery_messages
        await conn.execute(APPLY_RECEIPTS, *columns(receipts, 4))
