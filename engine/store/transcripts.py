"""Reading conversations back: recent transcripts (`engine transcript`, the demo) and the demo's
progress counters."""

from __future__ import annotations

import asyncpg

SELECT_TRANSCRIPTS = """
SELECT ch.type || ' ' || c.external_key AS conversation, ct.name, m.direction, m.text, m.created_at
FROM (SELECT * FROM conversations WHERE tenant_id = $1 ORDER BY last_message_at DESC LIMIT $2) c
JOIN channels ch ON ch.id = c.channel_id
JOIN channel_contacts ct ON ct.id = c.contact_id
JOIN message_history m ON m.conversation_id = c.id AND m.created_at >= to_timestamp($3)
ORDER BY 1, m.created_at, m.direction
"""
SELECT_PROGRESS = """
SELECT (SELECT count(*) FROM inbound_events WHERE processed_at >= to_timestamp($1)) AS processed,
       (SELECT count(*) FROM channel_messages WHERE created_at >= to_timestamp($1)
                                                AND status IN ('queued', 'sending')) AS pending,
       (SELECT count(*) FROM channel_messages WHERE created_at >= to_timestamp($1) AND status = 'sent') AS sent
"""


async def transcripts(pool: asyncpg.Pool, tenant_id: str, limit: int, since: float = 0.0) -> dict[str, list[str]]:
    """Messages of the tenant's `limit` most recent conversations (from `since`, a unix time), in order,
    as "who: text" lines per conversation."""
    out: dict[str, list[str]] = {}
    for r in await pool.fetch(SELECT_TRANSCRIPTS, tenant_id, limit, since):
        who = (r["name"] or "user") if r["direction"] == "inbound" else "bot"
        out.setdefault(r["conversation"], []).append(f"{who}: {r['text'] or ''}")
    return out


async def progress(pool: asyncpg.Pool, since: float) -> tuple[int, int, int]:
    """(inbound events processed, replies still queued or sending, replies sent) since a unix time."""
    row = await pool.fetchrow(SELECT_PROGRESS, since)
    assert row is not None
    return int(row["processed"]), int(row["pending"]), int(row["sent"])
