"""A Telegram webhook becomes a reply, end to end, on the real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
import random

import asyncpg

from engine.fake_platforms import Recorder
from engine.settings import Settings
from tests.harness import count, load_tenant, running_engine, telegram_update

INBOUND = "SELECT count(*) FROM message_history WHERE direction = 'inbound'"


async def test_500_updates_over_50_conversations_each_answered_once_in_order(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    channel = (await load_tenant(settings))["tg"]
    rng = random.Random(7)
    chats = {1000 + c: [f"c{c}-m{i}" for i in range(10)] for c in range(50)}
    update_ids = iter(rng.sample(range(1, 10_000_000), 500))

    async with running_engine(settings, workers=2) as engine:

        async def converse(chat_id: int, texts: list[str]) -> None:
            for text in texts:  # like Telegram: one chat's updates one after another
                await asyncio.sleep(rng.random() * 0.02)
                assert await engine.post_telegram(channel, telegram_update(next(update_ids), chat_id, text)) == 200

        await asyncio.gather(*(converse(chat, texts) for chat, texts in chats.items()))
        async with asyncio.timeout(60):
            await recorder.wait_for(500, platform="telegram", method="sendMessage")

    assert await count(pool, INBOUND) == 500
    assert await count(pool, "SELECT count(DISTINCT external_id) FROM message_history WHERE direction='inbound'") == 500
    assert await count(pool, "SELECT count(*) FROM channel_messages WHERE status = 'sent'") == 500
    sent = recorder.sent("telegram", method="sendMessage")
    assert len(sent) == 500
    for chat, texts in chats.items():
        replies = [r.body["text"] for r in sent if r.chat == str(chat)]
        assert replies == [f"Hi Ann! You said: {t}" for t in texts]


async def test_the_same_update_twice_gives_one_row_and_one_reply(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    channel = (await load_tenant(settings))["tg"]
    async with running_engine(settings) as engine:
        update = telegram_update(42, 555, "hello")
        assert await engine.post_telegram(channel, update) == 200
        assert await engine.post_telegram(channel, update) == 200  # the platform's retry
        assert await engine.post_telegram(channel, telegram_update(43, 555, "again")) == 200
        async with asyncio.timeout(30):
            await recorder.wait_for(2, platform="telegram", method="sendMessage")
        await asyncio.sleep(0.5)  # room for a wrong second reply to show up
    assert await count(pool, INBOUND) == 2
    assert [r.body["text"] for r in recorder.sent("telegram", method="sendMessage")] == [
        "Hi Ann! You said: hello",
        "Hi Ann! You said: again",
    ]
