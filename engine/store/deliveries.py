"""The sender's side of channel_messages: claim a row, record the outcome, sweep stale rows."""

from __future__ import annotations

from datetime import datetime

import asyncpg

# Claiming moves queued -> sending exactly once, so a reply published twice is sent once.
CLAIM = """
UPDATE channel_messages SET status = 'sending', attempts = attempts + 1, updated_at = now()
WHERE id = $1 AND created_at = $2 AND status = 'queued'
RETURNING id
"""
TOUCH = "UPDATE channel_messages SET attempts = attempts + 1, updated_at = now() WHERE id = $1 AND created_at = $2"
SELECT_CHANNEL = "SELECT channel_id FROM channel_messages WHERE id = $1 AND created_at = $2"
MARK_SENT = """
UPDATE channel_messages SET
    status = CASE WHEN status IN ('queued', 'sending') THEN 'sent' ELSE status END,
    platform_message_id = $3, sent_at = coalesce(sent_at, now()), updated_at = now()
WHERE id = $1 AND created_at = $2
"""
# Receipts that overtook the send (see store.messages.APPLY_STATUSES): apply the furthest one.
APPLY_PENDING = """
WITH r AS (
    DELETE FROM pending_receipts WHERE channel_id = $3 AND platform_message_id = $4 RETURNING *
), best AS (
    SELECT * FROM r ORDER BY delivery_rank(status) DESC LIMIT 1
)
UPDATE channel_messages m SET
    status = best.status, updated_at = now(),
    delivered_at = CASE WHEN best.status = 'delivered' THEN best.at ELSE m.delivered_at END,
    read_at = CASE WHEN best.status = 'read' THEN best.at ELSE m.read_at END,
    failed_at = CASE WHEN best.status = 'failed' THEN best.at ELSE m.failed_at END,
    error_code = coalesce(best.error_code, m.error_code), error = coalesce(best.error, m.error)
FROM best
WHERE m.id = $1 AND m.created_at = $2 AND m.status <> 'failed'
  AND delivery_rank(best.status) > delivery_rank(m.status)
"""
PRUNE_PENDING = "DELETE FROM pending_receipts WHERE received_at < now() - interval '7 days'"
MARK_FAILED = """
UPDATE channel_messages SET status = 'failed', error_code = $3, error = $4, failed_at = now(), updated_at = now()
WHERE id = $1 AND created_at = $2 AND status IN ('queued', 'sending')
"""
# Rows the broker may have lost (a publish after commit that failed, a sender that died mid-send):
# re-queue and hand them back for publishing. SKIP LOCKED lets several senders sweep at once.
SWEEP_STALE = """
WITH stale AS (
    SELECT id, created_at FROM channel_messages
    WHERE status IN ('queued', 'sending') AND updated_at < now() - make_interval(secs => $1)
    ORDER BY updated_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE channel_messages m SET status = 'queued', updated_at = now()
FROM stale WHERE m.id = stale.id AND m.created_at = stale.created_at
RETURNING m.body
"""


async def claim(pool: asyncpg.Pool, message_id: str, created_at: datetime) -> bool:
    return await pool.fetchval(CLAIM, message_id, created_at) is not None


async def touch(pool: asyncpg.Pool, message_id: str, created_at: datetime) -> None:
    await pool.execute(TOUCH, message_id, created_at)


async def mark_sent(pool: asyncpg.Pool, message_id: str, created_at: datetime, platform_id: str | None) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(MARK_SENT, message_id, created_at, platform_id)
        if platform_id is not None:
            channel_id = await conn.fetchval(SELECT_CHANNEL, message_id, created_at)
            await conn.execute(APPLY_PENDING, message_id, created_at, channel_id, platform_id)


async def mark_failed(pool: asyncpg.Pool, message_id: str, created_at: datetime, code: str | None, error: str) -> None:
    await pool.execute(MARK_FAILED, message_id, created_at, code, error[:1000])


async def sweep_stale(pool: asyncpg.Pool, older_than: float, limit: int = 500) -> list[dict[str, object]]:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(PRUNE_PENDING)
        return [r["body"] for r in await conn.fetch(SWEEP_STALE, older_than, limit)]
