"""The sender's batched bookkeeping on channel_messages: a claim is taken once, even when two copies
of a reply share a batch; recording sends applies receipts that overtook them."""

from __future__ import annotations

import time
import uuid
from datetime import datetime

import asyncpg

from engine.settings import Settings
from engine.store import deliveries
from engine.store.pool import create_pool
from engine.values import utc
from tests.table_reads import rows_read

INSERT = """
INSERT INTO channel_messages (id, tenant_id, channel_id, conversation_id, body, created_at)
VALUES ($1, $2, $3, $4, '{}'::jsonb, $5)
"""
PENDING = """
INSERT INTO pending_receipts (channel_id, platform_message_id, status, at) VALUES ($1, $2, $3, now())
"""


async def _row(pool: asyncpg.Pool, channel: uuid.UUID, created: datetime | None = None) -> tuple[str, datetime]:
    row_id, created = str(uuid.uuid4()), created or utc(1_700_000_000)
    await pool.execute(INSERT, row_id, uuid.uuid4(), channel, uuid.uuid4(), created)
    return row_id, created


async def test_a_reply_is_claimed_once_even_twice_in_one_batch(pool: asyncpg.Pool) -> None:
    channel = uuid.uuid4()
    a, b = await _row(pool, channel), await _row(pool, channel)
    assert await deliveries.claim_many(pool, [a, b, a]) == [True, True, False]  # type: ignore[list-item]
    assert await deliveries.claim_many(pool, [a, b]) == [False, False]  # type: ignore[list-item]


async def test_recording_sends_applies_the_furthest_receipt_that_overtook_them(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    channel = uuid.uuid4()
    a, b = await _row(pool, channel), await _row(pool, channel)
    await pool.execute(PENDING, channel, "wamid.A", "delivered")
    await pool.execute(PENDING, channel, "wamid.A", "read")
    sender = await create_pool(settings.database_url, max_size=1, reset=False, keyed=True)  # as the sender's
    try:
        await deliveries.mark_sent_many(sender, [(a[0], a[1], "wamid.A"), (b[0], b[1], "wamid.B")])  # type: ignore[list-item]
    finally:
        await sender.close()
    statuses = dict(await pool.fetch("SELECT platform_message_id, status FROM channel_messages"))
    assert statuses == {"wamid.A": "read", "wamid.B": "sent"}
    assert await pool.fetchval("SELECT count(*) FROM pending_receipts") == 0


async def test_a_claim_reads_only_its_rows_after_the_table_grew_under_a_cached_statement(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """The sender's claims and records run on connections that plan each statement once, for their
    whole life (store.pool.KEYED_PLANS). Planned while channel_messages was empty, 20,000 queued rows
    later they must still find their rows by primary key, not scan the table or the index of every
    pending row."""
    sender = await create_pool(settings.database_url, max_size=1, reset=False, keyed=True)  # as the sender's
    try:
        channel = uuid.uuid4()
        for _ in range(8):  # past the executions after which PostgreSQL may settle on a generic plan
            unknown = (str(uuid.uuid4()), utc(time.time()))
            assert await deliveries.claim_many(sender, [unknown]) == [False]
            await deliveries.mark_sent_many(sender, [(*unknown, "p0")])
        await pool.execute(
            """INSERT INTO channel_messages (id, tenant_id, channel_id, conversation_id, body, created_at)
               SELECT gen_random_uuid(), $1, $1, $1, '{}'::jsonb, now() FROM generate_series(1, 20000)""",
            channel,
        )
        mine = await _row(pool, channel, utc(time.time()))
        before = await rows_read(pool, "channel_messages%", sender)
        assert await deliveries.claim_many(sender, [mine]) == [True]  # type: ignore[list-item]
        claim_read = await rows_read(pool, "channel_messages%", sender) - before
        await deliveries.mark_sent_many(sender, [(*mine, "p1")])  # type: ignore[list-item]
        record_read = await rows_read(pool, "channel_messages%", sender) - before - claim_read
    finally:
        await sender.close()
    assert claim_read < 100, f"the claim read {claim_read} rows of channel_messages"
    assert record_read < 100, f"the sent record read {record_read} rows of channel_messages"
    assert await pool.fetchval("SELECT status FROM channel_messages WHERE id = $1", mine[0]) == "sent"


def _relations(plan: object) -> set[str]:
    """Every table an EXPLAIN (FORMAT JSON) plan reads or writes."""
    if isinstance(plan, dict):
        own = {plan["Relation Name"]} if "Relation Name" in plan else set()
        return own.union(*(_relations(v) for v in plan.values()))
    if isinstance(plan, list):
        return set().union(*(_relations(v) for v in plan))
    return set()


async def test_claims_and_records_plan_only_the_partition_of_their_rows(pool: asyncpg.Pool) -> None:
    """Planning an update of every monthly partition cost the sender's statements twice their
    execution; the partitions their rows are not in are pruned before planning."""
    row_id, created = await _row(pool, uuid.uuid4(), utc(time.time()))
    month = await pool.fetchval("SELECT tableoid::regclass::text FROM channel_messages WHERE id = $1", row_id)
    assert await pool.fetchval("SELECT count(*) FROM pg_inherits WHERE inhparent = 'channel_messages'::regclass") > 2
    async with pool.acquire() as conn:
        for sql, args in ((deliveries.CLAIM_MANY, ([row_id], [created])),
                          (deliveries.MARK_SENT_MANY, ([row_id], [created], ["p1"]))):  # fmt: skip
            plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
            partitions = {t for t in _relations(plan) if t.startswith("channel_messages_")}
            assert partitions == {month}, sql
