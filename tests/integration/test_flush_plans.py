"""The worker's flush on connections that plan each statement once (store.pool.KEYED_PLANS): the
statements whose plan depends on how big the tables are must still read only their rows after the
tables grew under a cached statement."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import asyncpg

from engine.models import DeliveryStatus, StatusEvent
from engine.settings import Settings
from engine.store import messages
from engine.store.pool import create_pool
from tests.table_reads import rows_read


def _receipt(channel: str, platform_id: str) -> messages.FlushRows:
    event = StatusEvent(channel, channel, platform_id, DeliveryStatus.DELIVERED, time.time(), "c")
    return messages.FlushRows(statuses=[((channel, f"status:{platform_id}"), event)])


async def _flush(worker: asyncpg.Pool, rows: messages.FlushRows) -> None:
    async with worker.acquire() as conn, conn.transaction():
        await messages.flush(conn, rows)


async def test_a_receipt_reads_only_its_message_after_the_table_grew_under_a_cached_statement(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    worker = await create_pool(settings.database_url, max_size=1, reset=False, keyed=True)  # as the worker's
    try:
        channel = str(uuid.uuid4())
        for n in range(8):  # past the executions after which PostgreSQL may settle on a generic plan
            await _flush(worker, _receipt(channel, f"unknown-{n}"))
        now = datetime.now(UTC)
        await pool.execute(
            """INSERT INTO channel_messages (id, tenant_id, channel_id, conversation_id, body, created_at, status,
                                             platform_message_id)
               SELECT gen_random_uuid(), $1, $1, $1, '{}'::jsonb, $2, 'sent', 'p' || n
               FROM generate_series(1, 20000) AS n""",
            channel,
            now,
        )
        before = await rows_read(pool, "channel_messages%", worker)
        await _flush(worker, _receipt(channel, "p7"))
        read = await rows_read(pool, "channel_messages%", worker) - before
    finally:
        await worker.close()
    assert read < 100, f"the receipt read {read} rows of channel_messages"
    assert await pool.fetchval("SELECT status FROM channel_messages WHERE platform_message_id = 'p7'") == "delivered"


async def test_a_reply_reads_only_its_contacts_recovery_messages_after_the_table_grew(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """MARK_REPLIED planned once while recovery_messages was empty would read every queued recovery
    message at each reply: on a keyed connection it is planned for each call (plan_per_call)."""
    tenant, contact = uuid.uuid4(), str(uuid.uuid4())
    await pool.execute("INSERT INTO organizations (id, slug, name) VALUES ($1, $2, 't')", tenant, str(tenant))
    campaign = await pool.fetchval(
        "INSERT INTO recovery_campaigns (id, tenant_id, slug, name, campaign_type, category, triggers, definition) "
        "VALUES (gen_random_uuid(), $1, 'c', 'c', 'cart_abandonment', 'marketing', '{cart_abandoned}', '{}') "
        "RETURNING id",
        tenant,
    )
    event = await pool.fetchval(
        "INSERT INTO recovery_events (id, tenant_id, event_type, source, source_id, occurred_at, expires_at) "
        "VALUES (gen_random_uuid(), $1, 'cart_abandoned', 'shop', 'e', now(), now() + interval '1 day') RETURNING id",
        tenant,
    )
    worker = await create_pool(settings.database_url, max_size=1, reset=False, keyed=True)  # as the worker's
    try:
        for _ in range(8):  # past the executions after which PostgreSQL may settle on a generic plan
            await _flush(worker, _reply(str(uuid.uuid4())))
        await pool.execute(
            """INSERT INTO recovery_messages (id, tenant_id, campaign_id, event_id, step, contact_id, status,
                                              scheduled_at, queued_at)
               SELECT gen_random_uuid(), $1, $2, $3, n, CASE WHEN n = 1 THEN $4 ELSE gen_random_uuid() END,
                      'sent', now() - interval '1 hour', now() - interval '1 hour'
               FROM generate_series(1, 20000) AS n""",
            tenant,
            campaign,
            event,
            uuid.UUID(contact),
        )
        before = await rows_read(pool, "recovery_messages", worker)
        await _flush(worker, _reply(contact))
        read = await rows_read(pool, "recovery_messages", worker) - before
    finally:
        await worker.close()
    assert read < 100, f"the reply read {read} rows of recovery_messages"
    assert await pool.fetchval("SELECT replied_at IS NOT NULL FROM recovery_messages WHERE contact_id = $1", contact)


def _reply(contact: str) -> messages.FlushRows:
    """A message from a contact this batch did not upsert: the flush looks for a recovery message."""
    return messages.FlushRows(recovery_replies=[(("c", f"reply:{contact}"), contact, datetime.now(UTC))])
