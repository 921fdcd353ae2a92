"""SQL of the admin API's conversations, transcripts, handoff queue and contacts. Reads only: the
worker that owns a conversation is the only writer of its state (the API sends it commands through
the conversation's shard); contact tags, which no worker writes, are the exception. A contact's
marketing opt-out is contact_preferences (the scheduler's, also written by STOP words and WhatsApp
user_preferences): the API writes it with engine.store.recovery.UPSERT_PREFERENCES, source 'api'.
Every statement is filtered by tenant ($1) besides row-level security. Pages are keyset cursors."""

from __future__ import annotations

_CONVERSATION_COLUMNS = """
c.id::text, c.channel_id::text, ch.type AS channel_type, c.contact_id::text, ct.name AS contact_name,
c.external_key, c.bot_id::text, c.status, c.flow_id::text, c.flow_version, c.node_id, c.variables, c.tags,
c.created_at, c.last_message_at
"""
_CONVERSATION_FROM = """
FROM conversations c JOIN channels ch ON ch.id = c.channel_id JOIN channel_contacts ct ON ct.id = c.contact_id
"""
SELECT_CONVERSATIONS = f"""
SELECT {_CONVERSATION_COLUMNS} {_CONVERSATION_FROM}
WHERE c.tenant_id = $1 AND ($2::text IS NULL OR c.status = $2) AND ($3::uuid IS NULL OR c.channel_id = $3)
  AND ($4::uuid IS NULL OR c.contact_id = $4) AND ($5::timestamptz IS NULL OR c.last_message_at >= $5)
  AND ($6::timestamptz IS NULL OR (c.last_message_at, c.id) < ($6, $7::uuid))
ORDER BY c.last_message_at DESC, c.id DESC LIMIT $8
"""
# The handoff queue: conversations waiting for a human, the longest-waiting first.
SELECT_HANDOFF_QUEUE = f"""
SELECT {_CONVERSATION_COLUMNS} {_CONVERSATION_FROM}
WHERE c.tenant_id = $1 AND c.status = 'human'
  AND ($2::timestamptz IS NULL OR (c.last_message_at, c.id) > ($2, $3::uuid))
ORDER BY c.last_message_at, c.id LIMIT $4
"""
SELECT_CONVERSATION = f"SELECT {_CONVERSATION_COLUMNS} {_CONVERSATION_FROM} WHERE c.tenant_id = $1 AND c.id = $2"

SELECT_MESSAGES = """
SELECT id::text, direction, sender, message_type, text, payload, created_at FROM message_history
WHERE tenant_id = $1 AND conversation_id = $2 AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4::uuid))
ORDER BY created_at, id LIMIT $5
"""
# Where an agent's reply goes: what the platform needs to answer in place (chat, thread), as the
# worker recorded it with the conversation's latest inbound message.
SELECT_REPLY_TARGET = """
SELECT payload->'reply_to' FROM message_history
WHERE tenant_id = $1 AND conversation_id = $2 AND direction = 'inbound' AND payload ? 'reply_to'
ORDER BY created_at DESC LIMIT 1
"""

_CONTACT_COLUMNS = """
k.id::text, k.channel_id::text, k.external_id, k.name, k.attributes, k.tags, k.created_at, k.last_seen_at,
coalesce(p.marketing_opt_out, false) AS opted_out, p.source AS opt_out_source, p.changed_at AS opt_out_changed_at
"""
_CONTACT_FROM = "FROM channel_contacts k LEFT JOIN contact_preferences p ON p.contact_id = k.id"
SELECT_CONTACTS = f"""
SELECT {_CONTACT_COLUMNS} {_CONTACT_FROM}
WHERE k.tenant_id = $1 AND ($2::uuid IS NULL OR k.channel_id = $2) AND ($3::text IS NULL OR $3 = any(k.tags))
  AND ($4::timestamptz IS NULL OR (k.last_seen_at, k.id) < ($4, $5::uuid))
ORDER BY k.last_seen_at DESC, k.id DESC LIMIT $6
"""
SELECT_CONTACT = f"SELECT {_CONTACT_COLUMNS} {_CONTACT_FROM} WHERE k.tenant_id = $1 AND k.id = $2"
UPDATE_CONTACT_TAGS = "UPDATE channel_contacts SET tags = $3 WHERE tenant_id = $1 AND id = $2"
SELECT_CONTACT_CONVERSATIONS = """
SELECT id::text, channel_id::text, external_key FROM conversations WHERE tenant_id = $1 AND contact_id = $2
ORDER BY last_message_at DESC LIMIT $3
"""
