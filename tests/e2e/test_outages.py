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
from tests.harness import BUNDLE, count, load_tenant, running_engine, telegram_update
from tests.proxy import TcpProxy

CHATS = (301, 302, 303)
BUNDLE_B = BUNDLE.replace("slug: acme,", "slug: beta,").replace("external_id: acme_bot", "external_id: beta_bot")


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


@pytest.mark.slow
async def test_the_receiver_keeps_accepting_for_known_channels_while_its_database_is_away(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    """Channels it has looked up are served from its cache (credentials and all); one it has not seen
    gets 503 with Retry-After, never a 500, and works once the database is back."""
    _, recorder = fake_platforms
    ids = await load_tenant(settings)
    other = (await load_tenant(settings, BUNDLE_B))["tg"]
    target = urlsplit(settings.database_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.start()
    receiver = _through("database", settings, proxy).model_copy(update={"channel_cache_ttl": 0.5})
    async with running_engine(receiver, workers=0, senders=0) as engine:
        engine.start_worker(settings)
        engine.start_sender(settings)
        assert await engine.post_telegram(ids["tg"], telegram_update(1, 501, "before")) == 200
        await proxy.cut()
        await asyncio.sleep(1.0)  # past the cache TTL: the entry is stale now
        assert await engine.post_telegram(ids["tg"], telegram_update(2, 501, "during")) == 200
        async with engine.http.post(
            f"{engine.url}/webhooks/telegram/{other}",
            json=telegram_update(3, 502, "unseen"),
            headers={"X-Telegram-Bot-Api-Secret-Token": "tg-secret-token"},
        ) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"].isdigit()
        await proxy.start()
        assert await engine.post_telegram(other, telegram_update(4, 502, "after")) == 200
        async with asyncio.timeout(30):
            await recorder.wait_for(3, platform="telegram", method="sendMessage")
    await proxy.cut()
    texts = sorted(r.body["text"] for r in recorder.sent("telegram", method="sendMessage"))
    assert texts == ["Hi Ann! You said: after", "Hi Ann! You said: before", "Hi Ann! You said: during"]
