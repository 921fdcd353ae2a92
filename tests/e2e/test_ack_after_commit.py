"""Ack after commit: while a worker's commit fails (its database cut off through a TCP proxy), the
message it holds stays unacked; when that worker then stops without ever committing, the broker
hands the message to the next worker, which answers it exactly once."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

import asyncpg
import pytest

from engine.bus.topology import Topology
from engine.fake_platforms import Recorder
from engine.settings import Settings
from tests.harness import count, load_tenant, running_engine, telegram_update, wait_until
from tests.proxy import TcpProxy

CHAT = 801


@pytest.mark.slow
async def test_a_commit_that_fails_leaves_the_message_unacked_and_it_is_answered_once_after_recovery(
    settings: Settings,
    pool: asyncpg.Pool,
    fake_platforms: tuple[str, Recorder],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, recorder = fake_platforms
    channel = (await load_tenant(settings))["tg"]
    tenant = str(await pool.fetchval("SELECT tenant_id FROM channels WHERE id = $1", channel))
    shard = Topology.of(settings).shard_of(tenant, channel, str(CHAT))
    db = urlsplit(settings.database_url)
    proxy = TcpProxy(db.hostname or "127.0.0.1", db.port or 5432)
    await proxy.start()
    cut_off = settings.model_copy(
        update={"database_url": settings.database_url.replace(f":{db.port or 5432}/", f":{proxy.port}/")}
    )
    caplog.set_level(logging.WARNING, logger="engine.store.pool")

    async with running_engine(settings, workers=0, senders=1) as engine:
        slot = len(engine.tasks)
        first = engine.start_worker(cut_off)
        assert await engine.post_telegram(channel, telegram_update(1, CHAT, "warm")) == 200
        async with asyncio.timeout(30):
            await recorder.wait_for(1, platform="telegram", method="sendMessage")
        # The conversation is in the worker's memory now: the next message needs the database only
        # to commit.
        await proxy.cut()
        caplog.clear()
        assert await engine.post_telegram(channel, telegram_update(2, CHAT, "held")) == 200
        await wait_until(lambda: _logged(caplog, "database unavailable"), timeout=20)  # the commit failed

        assert first.consumer is not None
        assert first.consumer.in_flight[shard] == 1  # taken, not committed: not acked either

        engine.stops[slot].set()  # the worker stops without ever committing it
        await engine.tasks[slot]
        second = engine.start_worker(settings)  # takes the shard once the first one's lease runs out
        async with asyncio.timeout(30):
            await recorder.wait_for(2, platform="telegram", method="sendMessage")
        await wait_until(lambda: _idle(second, shard))
        await asyncio.sleep(0.3)  # room for a duplicate to show up
    await proxy.cut()

    texts = [r.body["text"] for r in recorder.sent("telegram", method="sendMessage")]
    assert texts == ["Hi Ann! You said: warm", "Hi Ann! You said: held"]
    assert await count(pool, "SELECT count(*) FROM message_history WHERE direction = 'inbound'") == 2
    assert await count(pool, "SELECT count(*) FROM inbound_events") == 2


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records)


async def _idle(worker: object, shard: int) -> bool:
    consumer = getattr(worker, "consumer", None)
    return consumer is not None and shard in consumer.consumers and consumer.in_flight.get(shard) == 0
