"""Each process rides out its broker or its database going away (a TCP proxy cut for that process
alone, while the others keep theirs): it keeps running, holds what it has not committed, picks up
again when the dependency is back, and every accepted message is answered exactly once, in order.
The fault suite (tests/faults) does the same with real restarts of the machine's services."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import asyncpg
import pytest

from engine.fake_platforms import Recorder
from engine.settings import Settings
from tests.harness import count, load_tenant, running_engine, telegram_update
from tests.proxy import TcpProxy

CHATS = (301, 302, 303)


def _through(proxy_target: str, settings: Settings, proxy: TcpProxy) -> Settings:
    field = {"database": "database_url", "broker": "amqp_url"}[proxy_target]
    url = getattr(settings, field)
    port = urlsplit(url).port or (5432 if proxy_target == "database" else 5672)
    return settings.model_copy(update={field: url.replace(f":{port}/", f":{proxy.port}/")})


@pytest.mark.slow
@pytest.mark.parametrize("process", ["worker", "sender"])
@pytest.mark.parametrize("dependency", ["database", "broker"])
async def test_a_process_rides_out_its_dependency_going_away(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder], process: str, dependency: str
) -> None:
    _, recorder = fake_platforms
    channel = (await load_tenant(settings))["tg"]
    target = urlsplit(settings.database_url if dependency == "database" else settings.amqp_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or (5432 if dependency == "database" else 5672))
    await proxy.start()
    cut_off = _through(dependency, settings, proxy)
    update_id = iter(range(1, 1000))

    async def post_round(label: str) -> None:
        for chat in CHATS:
            assert await engine.post_telegram(channel, telegram_update(next(update_id), chat, label)) == 200

    async with running_engine(settings, workers=0, senders=0) as engine:
        engine.start_worker(cut_off if process == "worker" else settings)
        engine.start_sender(cut_off if process == "sender" else settings)
        await post_round("before")
        async with asyncio.timeout(30):
            await recorder.wait_for(len(CHATS), platform="telegram", method="sendMessage")
        await proxy.cut()
        for i in range(3):
            await post_round(f"during {i}")
        await asyncio.sleep(6)  # longer than any bounded retry inside the process
        await proxy.start()
        await post_round("after")
        async with asyncio.timeout(60):
            await recorder.wait_for(5 * len(CHATS), platform="telegram", method="sendMessage")
        await asyncio.sleep(0.5)  # room for a duplicate to show up
    await proxy.cut()  # engine.stop() above raised if any process had died

    sent = recorder.sent("telegram", method="sendMessage")
    labels = ["before", "during 0", "during 1", "during 2", "after"]
    for chat in CHATS:
        assert [r.body["text"] for r in sent if r.chat == str(chat)] == [f"Hi Ann! You said: {x}" for x in labels]
    assert await count(pool, "SELECT count(*) FROM channel_messages WHERE status = 'sent'") == 5 * len(CHATS)
