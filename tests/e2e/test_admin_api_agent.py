"""The admin API against the running engine: an agent's reply travels through the conversation's
shard, so it reaches the platform after the bot's message before it and before the bot's next one;
handback gives the conversation back; a flow saved through the API runs on the next message."""

from __future__ import annotations

import asyncio

import asyncpg

from engine.fake_platforms import Recorder
from engine.settings import Settings
from tests.api_helpers import Api, make_token, tenant_file
from tests.harness import load_tenant, running_engine, telegram_update, wait_until


def _texts(recorder: Recorder) -> list[str]:
    return [r.body["text"] for r in recorder.sent("telegram", method="sendMessage")]


async def test_an_agent_answers_in_order_and_hands_back(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    channel = (await load_tenant(settings, tenant_file("acme")))["tg"]
    token = await make_token(pool, "acme", "read,agent")
    async with running_engine(settings) as engine:
        api = Api(engine.http, engine.url)
        post = engine.post_telegram
        assert await post(channel, telegram_update(1, 77, "hi"), secret="s3cret") == 200
        assert await post(channel, telegram_update(2, 77, "I want an agent"), secret="s3cret") == 200
        async with asyncio.timeout(20):
            await recorder.wait_for(2, platform="telegram", method="sendMessage")
        (waiting,) = (await api.call("GET", "/handoff-queue", token))[1]["items"]
        conversation = waiting["id"]

        # The customer writes, the agent answers and hands back, the customer writes again: all at
        # once, without waiting for any of them to be processed. The shard keeps their order.
        assert await post(channel, telegram_update(3, 77, "hello?"), secret="s3cret") == 200
        for _ in range(2):  # a retried request (same Idempotency-Key) is the same message, sent once
            status, reply, _ = await api.call("POST", f"/conversations/{conversation}/messages", token,
                                              {"text": "Hi, Ann here. Sorted!", "agent": "ann"},
                                              {"Idempotency-Key": "ticket-1"})  # fmt: skip
            assert status == 202
        assert (await api.call("POST", f"/conversations/{conversation}/handback", token))[0] == 202
        assert await post(channel, telegram_update(4, 77, "thanks"), secret="s3cret") == 200
        async with asyncio.timeout(20):
            await recorder.wait_for(4, platform="telegram", method="sendMessage")
        await asyncio.sleep(0.5)  # nothing else may arrive
        assert _texts(recorder) == [
            "You said hi", "Connecting you with an agent.", "Hi, Ann here. Sorted!", "You said thanks",
        ]  # fmt: skip
        assert {r.body["chat_id"] for r in recorder.sent("telegram", method="sendMessage")} == {77}

        async def sent() -> bool:
            return await pool.fetchval("SELECT status FROM channel_messages WHERE id = $1", reply["id"]) == "sent"

        await wait_until(sent)
        assert (await api.call("GET", f"/conversations/{conversation}", token))[1]["status"] == "bot"
        page = (await api.call("GET", f"/conversations/{conversation}/messages", token))[1]["items"]
    assert [(m["direction"], m["sender"], m["text"]) for m in page] == [
        ("inbound", "77", "hi"), ("outbound", "bot", "You said hi"),
        ("inbound", "77", "I want an agent"), ("outbound", "bot", "Connecting you with an agent."),
        ("inbound", "77", "hello?"), ("outbound", "agent:ann", "Hi, Ann here. Sorted!"),
        ("inbound", "77", "thanks"), ("outbound", "bot", "You said thanks"),
    ]  # fmt: skip


async def test_a_flow_saved_through_the_api_runs_on_the_next_message(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    channel = (await load_tenant(settings, tenant_file("acme")))["tg"]
    token = await make_token(pool, "acme", "read,write")
    async with running_engine(settings) as engine:
        api = Api(engine.http, engine.url)
        assert await engine.post_telegram(channel, telegram_update(1, 5, "one"), secret="s3cret") == 200
        async with asyncio.timeout(20):
            await recorder.wait_for(1, platform="telegram", method="sendMessage")
        (flow,) = (await api.call("GET", "/flows", token))[1]
        definition = {**flow["definition"], "nodes": [
            {"id": "greet", "type": "message", "text": "Version two heard {{message.text}}", "next": "done"},
            {"id": "done", "type": "end"},
        ]}  # fmt: skip
        status, saved, _ = await api.call("PUT", f"/flows/{flow['id']}", token, definition)
        assert (status, saved["version"]) == (200, 2)
        await asyncio.sleep(1.5)  # the workers reload within a second (NOTIFY from the same triggers)
        assert await engine.post_telegram(channel, telegram_update(2, 5, "two"), secret="s3cret") == 200
        async with asyncio.timeout(20):
            await recorder.wait_for(2, platform="telegram", method="sendMessage")
    assert _texts(recorder) == ["You said one", "Version two heard two"]
