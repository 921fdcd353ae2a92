"""A multi-turn conversation through webhooks, end to end: greeting -> order number asked, validated
and re-prompted -> an HTTP tool against a local test server -> its result -> "agent" hands off and
the bot goes silent -> `engine conversation handback` gives it back to the bot. Also: a flow edited mid-conversation keeps the conversation on its version."""

from __future__ import annotations

import asyncio

import asyncpg

from engine.admin.commands import command_conversation
from engine.fake_platforms import Recorder
from engine.settings import Settings
from tests.harness import Running, count, load_tenant, running_engine, telegram_update, wait_until

BUNDLE = """
tenant: {slug: shop, name: Shop, timezone: Europe/Madrid}
bots: [{slug: shop, name: Shop}]
channels:
  - {slug: tg, type: telegram, bot: shop, secrets: {bot_token: "1:T", secret_token: s3cret}}
rules:
  - name: agent
    priority: 1
    conditions: {all: [{status: bot}, {contains: [agent]}]}
    actions: [{handoff: {queue: support, text: "Connecting you with an agent."}}]
  - name: orders
    priority: 5
    conditions: {all: [{status: bot}, {contains: [order]}]}
    actions: [{start_flow: {bot: shop, flow: orders}}]
flows:
  - bot: shop
    slug: main
    default: true
    nodes:
      - {id: greet, type: message, text: "Hi {{contact.name | there}}! Ask me about your order.", next: done}
      - {id: done, type: end}
  - bot: shop
    slug: orders
    nodes:
      - id: ask
        type: ask
        prompt: "What's your order number?"
        var: order
        validate: {kind: regex, pattern: '\\d{5}'}
        retries: 2
        retry_prompt: "An order number has 5 digits."
        next: lookup
        fallback: done
      - {id: lookup, type: tool, tool: order_status, args: {number: "{{order}}"}, var: result, next: tell, error: oops}
      - {id: tell, type: message, text: "Order {{order}} is {{result.status}}.", next: done}
      - {id: oops, type: message, text: "I could not look up {{order}}.", next: done}
      - {id: done, type: end}
tools:
  - slug: order_status
    method: GET
    url: "SHOP/api/orders/{{number}}"
    headers: {Authorization: "Bearer {{secret.token}}"}
    timeout: 5
    retries: 2
    secrets: {token: shop-token}
"""
FLOW_V2 = BUNDLE.replace("Order {{order}} is {{result.status}}.", "V2 says {{order}}.")


async def say(engine: Running, channel: str, seq: int, text: str) -> None:
    assert await engine.post_telegram(channel, telegram_update(seq, 77, text), secret="s3cret") == 200


async def test_order_lookup_then_handoff_silences_the_bot(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    base, recorder = fake_platforms
    channel = (await load_tenant(settings, BUNDLE.replace("SHOP", f"{base}/shop")))["tg"]
    expected_after = [  # replies expected after each message, cumulatively
        ("hi", ["Hi Ann! Ask me about your order."]),
        ("where is my order?", ["What's your order number?"]),
        ("123", ["An order number has 5 digits."]),
        ("12345", ["Order 12345 is processing."]),
        ("I want an agent", ["Connecting you with an agent."]),
    ]
    replies: list[str] = []
    async with running_engine(settings) as engine:
        for seq, (text, new) in enumerate(expected_after, start=1):
            await say(engine, channel, seq, text)
            replies += new
            async with asyncio.timeout(20):
                await recorder.wait_for(len(replies), platform="telegram", method="sendMessage")
        await say(engine, channel, 99, "hello? is anyone there?")
        await asyncio.sleep(1.0)  # the bot must stay silent: no reply may arrive
        assert [r.body["text"] for r in recorder.sent("telegram", method="sendMessage")] == replies

        # The human agent is done: hand the conversation back; the bot answers again.
        conversation_id = await pool.fetchval("SELECT id::text FROM conversations")
        assert await command_conversation(settings, conversation_id, "handback") == 0

        async def handed_back() -> bool:
            return await pool.fetchval("SELECT status FROM conversations") == "bot"

        await wait_until(handed_back)
        await say(engine, channel, 100, "order please")
        replies.append("What's your order number?")
        async with asyncio.timeout(20):
            await recorder.wait_for(len(replies), platform="telegram", method="sendMessage")
    assert [r.body["text"] for r in recorder.sent("telegram", method="sendMessage")] == replies
    assert "queue:support" in await pool.fetchval("SELECT tags FROM conversations")
    run = await pool.fetchrow("SELECT tool_name, status, attempts, idempotency_key FROM tool_executions")
    assert (run["tool_name"], run["status"], run["attempts"]) == ("order_status", "ok", 1)
    assert run["idempotency_key"]
    assert await count(pool, "SELECT count(*) FROM message_history WHERE direction = 'inbound'") == 7


async def test_a_flow_edited_mid_conversation_keeps_its_version(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    base, recorder = fake_platforms
    bundle = BUNDLE.replace("SHOP", f"{base}/shop")
    channel = (await load_tenant(settings, bundle))["tg"]
    async with running_engine(settings) as engine:
        await say(engine, channel, 1, "my order")
        async with asyncio.timeout(20):
            await recorder.wait_for(1, platform="telegram", method="sendMessage")
        await load_tenant(settings, FLOW_V2.replace("SHOP", f"{base}/shop"))  # version 2 of 'orders'
        await asyncio.sleep(1.5)  # the workers reload within a second (LISTEN/NOTIFY)
        await say(engine, channel, 2, "54321")
        async with asyncio.timeout(20):
            await recorder.wait_for(2, platform="telegram", method="sendMessage")
        await say(engine, channel, 3, "another order please")
        await say(engine, channel, 4, "11111")
        async with asyncio.timeout(20):
            await recorder.wait_for(4, platform="telegram", method="sendMessage")
    texts = [r.body["text"] for r in recorder.sent("telegram", method="sendMessage")]
    assert texts[1].startswith("Order 54321 is ")  # the conversation finished on version 1
    assert texts[3] == "V2 says 11111."  # a new run of the flow starts on version 2
    versions = await pool.fetchval("SELECT count(*) FROM bot_flows WHERE slug = 'orders'")
    assert versions == 2


async def test_a_looping_flow_is_stopped_and_the_error_kept_with_the_message(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    looping = """
tenant: {slug: loop, name: Loop}
bots: [{slug: b, name: B}]
channels: [{slug: tg, type: telegram, bot: b, secrets: {bot_token: "1:T", secret_token: s3cret}}]
flows:
  - bot: b
    slug: main
    default: true
    nodes:
      - {id: hello, type: message, text: "Looping now.", next: a}
      - {id: a, type: set, values: {x: 1}, next: b}
      - {id: b, type: condition, branches: [{when: "x == 1", next: a}], else: done}
      - {id: done, type: end}
"""
    settings = settings.model_copy(update={"max_flow_steps": 25})
    channel = (await load_tenant(settings, looping))["tg"]
    async with running_engine(settings) as engine:
        await say(engine, channel, 1, "go")
        async with asyncio.timeout(20):
            await recorder.wait_for(1, platform="telegram", method="sendMessage")
    errors = await pool.fetchval("SELECT payload->'errors' FROM message_history WHERE direction = 'inbound'")
    assert len(errors) == 1
    assert errors[0].startswith("flow main v1: stopped after 25 steps at node ")
    assert [r.body["text"] for r in recorder.sent("telegram", method="sendMessage")] == ["Looping now."]
