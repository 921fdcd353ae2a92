"""The sender's side of channel_messages: claim a row, record the outcome, sweep stale rows."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from engine.store import columns

# Claiming moves queued -> sending exactly once, so a reply delivered twice is sent once. The sender
# claims every copy of a reply but the worker's first (the commit that created the row is its claim:
# outbound.sender.Sender._first_copy); a first copy's row stays 'queued' until it is recorded sent
# or failed, and that record counts the attempt its claim would have (attempts: claims and retries).
# Claims and sent records run on a pool of keyed plans (store.pool.KEYED_PLANS): planned once, as one
# primary-key lookup per row. `created_at = ANY($2)` lets a custom plan prune the partitions the rows
# are not in before planning them (tests, other pools). The claim says "queued" as "none of the other
# statuses" so that no plan can read the partial index of pending rows (status IN ('queued',
# 'sending')) in place of the key: a plan made while few rows were pending would read all of them.
CLAIM_MANY = """
UPDATE channel_messages m SET status = 'sending', attempts = attempts + 1, updated_at = now()
FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, created_at)
WHERE m.id = u.id AND m.created_at = u.created_at AND m.created_at = ANY($2)
  AND m.status NOT IN ('sending', 'sent', 'delivered', 'read', 'failed')
RETURNING m.id::text
"""
TOUCH = "UPDATE channel_messages SET attempts = attempts + 1, updated_at = now() WHERE id = $1 AND created_at = $2"
MARK_SENT_MANY = """
UPDATE channel_messages m SET
    status = CASE WHEN m.status IN ('queued', 'sending') THEN 'sent' ELSE m.status END,
    platform_message_id = u.platform_id, sent_at = coalesce(m.sent_at, now()), updated_at = now(),
    attempts = m.attempts + (m.status = 'queued')::int
FROM unnest($1::uuid[], $2::timestamptz[], $3::text[]) AS u(id, created_at, platform_id)
WHERE m.id = u.id AND m.created_at = u.created_at AND m.created_at = ANY($2)
RETURNING m.channel_id, m.platform_message_id, EXISTS (
    SELECT 1 FROM pending_receipts p WHERE p.channel_id = m.channel_id AND p.platform_message_id = m.platform_message_id
) AS overtaken
"""
# Receipts that overtook the sends just recorded: for each message, apply the furthest one.
APPLY_PENDING_MANY = """
WITH r AS (
    DELETE FROM pending_receipts p USING unnest($1::uuid[], $2::text[]) AS u(channel_id, platform_message_id)
    WHERE p.channel_id = u.channel_id AND p.platform_message_id = u.platform_message_id
    RETURNING p.*
), best AS (
    SELECT DISTINCT ON (channel_id, platform_message_id) * FROM r
    ORDER BY channel_id, platform_message_id, delivery_rank(status) DESC
)
UPDATE channel_messages m SET
    status = best.status, updated_at = now(),
    delivered_at = CASE WHEN best.status = 'delivered' THEN best.at ELSE m.delivered_at END,
    read_at = CASE WHEN best.status = 'read' THEN best.at ELSE m.read_at END,
    failed_at = CASE WHEN best.status = 'failed' THEN best.at ELSE m.failed_at END,
    error_code = coalesce(best.error_code, m.error_code), error = coalesce(best.error, m.error)
FROM best
WHERE m.channel_id = best.channel_id AND m.platform_message_id = best.platform_message_id
  AND m.status <> 'failed' AND delivery_rank(best.status) > delivery_rank(m.status)
"""
PRUNE_PENDING = "DELETE FROM pending_receipts WHERE received_at < now() - interval '7 days'"
MARK_FAILED = """
UPDATE channel_messages SET status = 'failed', error_code = $3, error = $4, failed_at = now(), updated_at = now(),
    attempts = attempts + (status = 'queued')::int
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


async def claim_many(pool: asyncpg.Pool, rows: list[tuple[str, datetime]]) -> list[bool]:
    """claim() for many rows in one statement: for each (id, created_at), whether this call claimed it."""
    claimed = {r[0] for r in await pool.fetch(CLAIM_MANY, [r[0] for r in rows], [r[1] for r in rows])}
    result = []
    for message_id, _ in rows:  # two copies of one reply in a batch: only the first claims it
        result.append(message_id in claimed)
        claimed.discard(message_id)
    return result


async def mark_sent_many(pool: asyncpg.Pool, rows: list[tuple[str, datetime, str | None]]) -> list[None]:
    """mark_sent() for many rows in one statement; then the receipts that overtook them (rare) applied."""
    sent = await pool.fetch(MARK_SENT_MANY, *columns(rows, 3))
    if overtaken := [r for r in sent if r["overtaken"]]:
        channels, platform_ids = [r["channel_id"] for r in overtaken], [r["platform_message_id"] for r in overtaken]
        await pool.execute(APPLY_PENDING_MANY, channels, platform_ids)
    return [None] * len(rows)


async def touch(pool: asyncpg.Pool, message_id: str, created_at: datetime) -> None:
    await pool.execute(TOUCH, message_id, created_at)


async def mark_failed(pool: asyncpg.Pool, message_id: str, created_at: datetime, code: str | None, error: str) -> None:
    await pool.execute(MARK_FAILED, message_id, created_at, code, error[:1000])


async def sweep_stale(pool: asyncpg.Pool, older_than: float, limit: int = 500) -> list[dict[str, object]]:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(PRUNE_PENDING)
        return [r["body"] for r in await conn.fetch(SWEEP_STALE, older_than, limit)]
