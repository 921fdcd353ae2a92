"""A message whose handling raises inside the worker (not one that cannot be decoded), end to end: it
is tried exactly MAX_ATTEMPTS times through the shard's retry queue, then set aside on the dead
letters with its reason and origin, while the other conversations of the same shard are answered.

What makes the brain raise is real: a conversation runs a flow version whose stored definition this
engine cannot read any more (as after an upgrade that tightened the flow model). A restarted worker
loads only the latest versions, so it fetches the old one for that conversation, and validating it
raises, every time; conversations that start now get the latest version and are answered."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest
from prometheus_client import REGISTRY

from engine.bus.consumer import ATTEMPT_HEADER, MAX_ATTEMPTS, ORIGIN_HEADER, REASON_HEADER
from engine.bus.topology import Topology
from engine.fake_platforms import Recorder
from engine.settings import Settings
from tests.harness import (
    count,
    dead_letter_count,
    load_tenant,
    queue_messages,
    running_engine,
    telegram_update,
    wait_until,
)

BUNDLE = """
tenant: {slug: upgraded, name: Upgraded, timezone: UTC}
bots: [{slug: shop, name: Shop}]
channels:
  - {slug: tg, type: telegram, bot: shop, external_id: up_bot, secrets: {bot_token: "1:T", secret_token: tg-secret-token}}
flows:
  - bot: shop
    slug: main
    default: true
    nodes:
      - {id: ask, type: ask, prompt: "VERSION: your name?", var: name, next: thanks, fallback: thanks}
      - {id: thanks, type: message, text: "Thanks {{name}}", next: end}
      - {id: end, type: end}
"""
STUCK, OTHERS = 901, (902, 903, 904)


def _sample(name: str, reason: str | None = None) -> float:
    return REGISTRY.get_sample_value(name, {"reason": reason} if reason else {}) or 0.0


@pytest.mark.slow
async def test_a_handler_that_raises_is_tried_max_attempts_times_then_dead_lettered_and_the_shard_flows(
    settings: Settings,
    pool: asyncpg.Pool,
    fake_platforms: tuple[str, Recorder],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, recorder = fake_platforms
    settings = settings.model_copy(update={"shards": 1})  # every conversation on the one shard
    channel = (await load_tenant(settings, BUNDLE.replace("VERSION", "v1")))["tg"]
    caplog.set_level(logging.ERROR, logger="engine.worker.pipeline")

    async with running_engine(settings, workers=0, senders=1) as engine:
        slot = len(engine.tasks)
        engine.start_worker()
        assert await engine.post_telegram(channel, telegram_update(1, STUCK, "hi")) == 200
        async with asyncio.timeout(30):
            await recorder.wait_for(1, platform="telegram", method="sendMessage")  # waits at v1's ask node
        engine.stops[slot].set()
        await engine.tasks[slot]

        await load_tenant(settings, BUNDLE.replace("VERSION", "v2"))
        # v1 as an older engine stored it: this one cannot read it any more.
        await pool.execute("""UPDATE bot_flows SET definition = jsonb_set(definition, '{nodes}', '"a list once"')
                              WHERE version = 1""")
        engine.start_worker()  # loads only v2
        caplog.clear()
        retries, dead_before = _sample("engine_message_retries_total"), _sample("engine_dead_letters_total", "handler")
        assert await engine.post_telegram(channel, telegram_update(2, STUCK, "Ann")) == 200
        for update_id, chat in enumerate(OTHERS, start=3):
            assert await engine.post_telegram(channel, telegram_update(update_id, chat, "hi")) == 200
        await wait_until(lambda: dead_letter_count(settings), timeout=30)
        assert await engine.post_telegram(channel, telegram_update(10, OTHERS[0], "Bob")) == 200  # still flowing
        async with asyncio.timeout(30):
            await recorder.wait_for(1 + len(OTHERS) + 1, platform="telegram", method="sendMessage")
        dead = await queue_messages(settings, Topology.of(settings).dead)

    tries = [
        r
        for r in caplog.records
        if r.getMessage().startswith("handling event") and r.getMessage().endswith(":2 failed")
    ]
    assert len(tries) == MAX_ATTEMPTS
    assert _sample("engine_message_retries_total") == retries + MAX_ATTEMPTS - 1  # what operators watch
    assert _sample("engine_dead_letters_total", "handler") == dead_before + 1
    assert len(dead) == 1
    headers = dead[0].headers or {}
    assert "validation error for FlowDef" in str(headers[REASON_HEADER])  # the reason, for the operator
    assert headers[ORIGIN_HEADER] == Topology.of(settings).inbound_queue(0)
    assert headers[ATTEMPT_HEADER] == MAX_ATTEMPTS - 1
    sent = recorder.sent("telegram", method="sendMessage")
    assert [r.body["text"] for r in sent if r.chat == str(STUCK)] == ["v1: your name?"]  # nothing for "Ann"
    for chat in OTHERS:
        expected = ["v2: your name?", "Thanks Bob"] if chat == OTHERS[0] else ["v2: your name?"]
        assert [r.body["text"] for r in sent if r.chat == str(chat)] == expected
    assert await count(pool, "SELECT count(*) FROM inbound_events WHERE event_id = '2'") == 0
