"""A worker SIGKILLed in the middle of a load: after a new one starts, nothing lost or duplicated."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter

import asyncpg
import pytest

from engine.fake_platforms import Recorder
from engine.settings import Settings
from tests.harness import count, load_tenant, running_engine, spawn, telegram_update, wait_until


@pytest.mark.slow
async def test_worker_killed_mid_load_loses_and_duplicates_nothing(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    channel = (await load_tenant(settings))["tg"]
    texts = {2000 + c: [f"c{c}-m{i}" for i in range(10)] for c in range(30)}
    first = spawn(settings, "worker")
    try:
        async with running_engine(settings, workers=0, senders=1) as engine:
            update_ids = iter(range(1, 1000))

            async def converse(chat: int, lines: list[str]) -> None:
                for line in lines:
                    assert await engine.post_telegram(channel, telegram_update(next(update_ids), chat, line)) == 200
                    await asyncio.sleep(0.01)

            load = asyncio.gather(*(converse(chat, lines) for chat, lines in texts.items()))

            async def some_processed() -> bool:
                return await count(pool, "SELECT count(*) FROM inbound_events") >= 60

            await wait_until(some_processed, timeout=60)
            first.send_signal(signal.SIGKILL)
            first.wait()
            await load  # the receiver kept accepting while no worker ran
            second = spawn(settings, "worker")
            try:
                async with asyncio.timeout(90):
                    await recorder.wait_for(300, platform="telegram", method="sendMessage")
                await asyncio.sleep(1.0)  # room for a duplicate to show up
            finally:
                second.send_signal(signal.SIGTERM)
                assert second.wait(timeout=30) == 0  # a graceful stop
    finally:
        if first.poll() is None:
            first.kill()

    assert await count(pool, "SELECT count(*) FROM message_history WHERE direction = 'inbound'") == 300
    assert await count(pool, "SELECT count(*) FROM message_history WHERE direction = 'outbound'") == 300
    sent = Counter(r.body["text"] for r in recorder.sent("telegram", method="sendMessage"))
    expected = {f"Hi Ann! You said: {line}" for lines in texts.values() for line in lines}
    assert set(sent) == expected
    assert max(sent.values()) == 1
