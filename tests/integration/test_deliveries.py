"""The sender's batched bookkeeping on channel_messages: a claim is taken once, even when two copies
of a reply share a batch; recording sends applies receipts that overtook them."""

from __future__ import annotations

import uuid

import asyncpg

from engine.store import deliveries
from engine.values import utc

INSERT = """
INSERT INTO channel_messages (id, tenant_id, channel_id, conversation_id, body, created_at)
VALUES ($1, $2, $3, $4, '{}'::jsonb, $5)
"""
PENDING = """
INSERT INTO pending_receipts (channel_id, platform_message_id, status, at) VALUES ($1, $2, $3, now())
"""


async def _row(pool: asyncpg.Pool, channel: uuid.UUID) -> tuple[str, object]:
    row_id, created = str(uuid.uuid4()), utc(1_700_000_000)
    await pool.execute(INSERT, row_id, uuid.uuid4(), channel, uuid.uuid4(), created)
    return row_id, created


async def test_a_reply_is_claimed_once_even_twice_in_one_batch(pool: asyncpg.Pool) -> None:
    channel = uuid.uuid4()
    a, b = await _row(pool, channel), await _row(pool, channel)
    assert await deliveries.claim_many(pool, [a, b, a]) == [True, True, False]  # type: ignore[list-item]
    assert await deliveries.claim_many(pool, [a, b]) == [False, False]  # type: ignore[list-item]


async def test_recording_sends_applies_the_furthest_receipt_that_overtook_them(pool: asyncpg.Pool) -> None:
    channel = uuid.uuid4()
    a, b = await _row(pool, channel), await _row(pool, channel)
    await pool.execute(PENDING, channel, "wamid.A", "delivered")
    await pool.execute(PENDING, channel, "wamid.A", "read")
    await deliveries.mark_sent_many(pool, [(a[0], a[1], "wamid.A"), (b[0], b[1], "wamid.B")])  # type: ignore[list-item]
    statuses = dict(await pool.fetch("SELECT platform_message_id, status FROM channel_messages"))
    assert statuses == {"wamid.A": "read", "wamid.B": "sent"}
    assert await pool.fetchval("SELECT count(*) FROM pending_receipts") == 0
