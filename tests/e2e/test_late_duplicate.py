"""A duplicate that only the idempotency ledger can catch, end to end: the platform sends an event
again after the conversation has moved on by more than the recent-id window (the worker's memory
and the ids it loads from the ledger both hold the last RECENT_EVENTS). It is answered 200, written
nowhere, and no second reply is published."""

from __future__ import annotations

import asyncpg
from prometheus_client import REGISTRY

from engine.settings import Settings
from engine.worker.conversations import RECENT_EVENTS
from tests.harness import count, load_tenant, queued_replies, running_engine, telegram_update, wait_until

CHAT = 700


def _duplicates(stage: str) -> float:
    return REGISTRY.get_sample_value("engine_duplicates_total", {"stage": stage}) or 0.0


async def test_a_redelivery_older_than_the_recent_window_is_caught_by_the_ledger(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    channel = (await load_tenant(settings))["tg"]
    later = RECENT_EVENTS  # this many events after the first push it out of every recent-id window
    async with running_engine(settings, workers=1, senders=0) as engine:  # replies stay in their queues
        assert await engine.post_telegram(channel, telegram_update(1, CHAT, "first")) == 200
        await wait_until(lambda: count(pool, "SELECT count(*) FROM inbound_events"))
        for update_id in range(2, later + 2):
            assert await engine.post_telegram(channel, telegram_update(update_id, CHAT, f"m{update_id}")) == 200
        await wait_until(lambda: _equals(pool, "SELECT count(*) FROM inbound_events", later + 1))
        cache_before, ledger_before = _duplicates("cache"), _duplicates("ledger")

        assert await engine.post_telegram(channel, telegram_update(1, CHAT, "first")) == 200  # the platform again
        # A new message behind it in the same conversation: once it is committed, so is whatever the
        # duplicate caused (one lane per conversation, batches commit in order).
        assert await engine.post_telegram(channel, telegram_update(later + 2, CHAT, "last")) == 200
        await wait_until(lambda: _equals(pool, "SELECT count(*) FROM inbound_events", later + 2))
        published = sum(map(len, await queued_replies(settings)))

    assert _duplicates("cache") == cache_before  # the worker's memory did not catch it ...
    assert _duplicates("ledger") == ledger_before + 1  # ... the ledger did
    assert (
        await count(pool, "SELECT count(*) FROM message_history WHERE direction = 'inbound' AND external_id = '1'") == 1
    )
    assert await count(pool, "SELECT count(*) FROM message_history WHERE direction = 'inbound'") == later + 2
    assert await count(pool, "SELECT count(*) FROM channel_messages") == later + 2
    assert published == later + 2  # one reply per distinct event, none for the duplicate


async def _equals(pool: asyncpg.Pool, sql: str, expected: int) -> bool:
    return await count(pool, sql) == expected
