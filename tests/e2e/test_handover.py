"""Shard hand-over order, made deterministic: the old owner holds a conversation's message in flight
(its flow waits in an HTTP tool call on an endpoint the test releases), a new worker joins and is
given the shard, and the conversation's next message is processed only after the first one is
committed and acked. The shard's row stays the old owner's for as long as the message is held,
however often the new worker tries to claim it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from engine.bus.topology import Topology
from engine.fake_platforms import Recorder
from engine.settings import Settings
from tests.harness import count, load_tenant, running_engine, telegram_update, wait_until
from workers.worker import WorkerProcess

SHARDS = 16
FAST = {"chat_rate": 1000, "chat_burst": 1000, "channel_rate": 1000, "channel_burst": 1000}
BUNDLE = """
tenant: {slug: handover, name: Handover, timezone: UTC}
bots: [{slug: shop, name: Shop, welcome_text: "Hi {name}!", echo: true}]
channels:
  - {slug: tg, type: telegram, bot: shop, external_id: ho_bot, secrets: {bot_token: "1:T", secret_token: tg-secret-token}}
rules:
  - {name: slow, priority: 1, conditions: {contains: [slow]}, actions: [{start_flow: {bot: shop, flow: slow}}]}
flows:
  - bot: shop
    slug: slow
    nodes:
      - {id: call, type: tool, tool: gate, args: {chat: "{{contact.key}}"}, next: done, error: done}
      - {id: done, type: message, text: "slow done", next: end}
      - {id: end, type: end}
tools:
  - {slug: gate, method: GET, url: "GATE/gate/{{chat}}", timeout: 30, retries: 0}
"""


class Gate:
    """An HTTP endpoint that holds every request until the test opens it."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.waiting: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.waiting.append(request.match_info["chat"])
        await self.opened.wait()
        return web.json_response({"ok": True})


@contextlib.asynccontextmanager
async def serving(gate: Gate) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/gate/{chat}", gate.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        gate.opened.set()
        await runner.cleanup()


async def test_the_next_message_waits_until_the_old_owner_committed_and_acked_the_first(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    # The hand-over grace is longer than the test holds the message: a grace that runs out is
    # the documented exception (the message goes back to the broker), not what is tested here.
    settings = settings.model_copy(update={"shards": SHARDS, "shutdown_grace": 60.0, "rate_limits": {"telegram": FAST}})
    gate = Gate()
    async with serving(gate) as gate_url:
        channel = (await load_tenant(settings, BUNDLE.replace("GATE", gate_url)))["tg"]
        tenant = str(await pool.fetchval("SELECT tenant_id FROM channels WHERE id = $1", channel))
        chat_of_shard = _one_chat_per_shard(Topology.of(settings), tenant, channel)
        async with running_engine(settings, workers=0, senders=1) as engine:
            old = engine.start_worker()
            await wait_until(lambda: _consumes(old, set(range(SHARDS))), timeout=20)
            for update_id, chat in enumerate(chat_of_shard.values(), start=1):
                assert await engine.post_telegram(channel, telegram_update(update_id, chat, "slow please")) == 200
            await wait_until(lambda: _true(len(gate.waiting) == SHARDS), timeout=20)  # all held in flight

            new = engine.start_worker()
            # The old owner releases the shards that move, one at a time; the first one waits for its
            # held message. It no longer consumes that shard, and the new worker wants it.
            moved = await wait_until(lambda: _released(old), timeout=20)
            shard = min(moved)
            chat = chat_of_shard[shard]
            assert await engine.post_telegram(channel, telegram_update(100, chat, "next")) == 200
            new_id = await wait_until(lambda: _true(new.consumer and new.consumer.membership.me), timeout=20)
            await _heartbeats(pool, new_id, 3)  # the new worker has tried to claim it at least twice since

            assert await _owner(pool, shard) == old.consumer.membership.me  # type: ignore[union-attr]
            assert shard not in new.consumer.consumers  # type: ignore[union-attr]
            assert await count(pool, "SELECT count(*) FROM inbound_events WHERE event_id = '100'") == 0

            gate.opened.set()
            async with asyncio.timeout(30):
                await recorder.wait_for(SHARDS + 1, platform="telegram", method="sendMessage")
            await wait_until(lambda: _true(shard in new.consumer.consumers), timeout=20)  # type: ignore[union-attr]
            assert await _owner(pool, shard) == new_id

    texts = [r.body["text"] for r in recorder.sent("telegram", method="sendMessage") if r.chat == str(chat)]
    assert texts == ["slow done", "Hi Ann! You said: next"]
    inbound = await pool.fetch(
        "SELECT text FROM message_history WHERE direction = 'inbound' AND sender = $1 ORDER BY created_at", str(chat)
    )
    assert [r["text"] for r in inbound] == ["slow please", "next"]


def _one_chat_per_shard(topology: Topology, tenant: str, channel: str) -> dict[int, int]:
    found: dict[int, int] = {}
    for chat in range(1000, 100_000):
        found.setdefault(topology.shard_of(tenant, channel, str(chat)), chat)
        if len(found) == topology.shards:
            return found
    raise AssertionError("no chat for some shard")


async def _true(value: object) -> object:
    return value


async def _consumes(worker: WorkerProcess, shards: set[int]) -> bool:
    return worker.consumer is not None and set(worker.consumer.consumers) == shards


async def _released(worker: WorkerProcess) -> set[int]:
    assert worker.consumer is not None
    return set(range(SHARDS)) - set(worker.consumer.consumers)


async def _owner(pool: asyncpg.Pool, shard: int) -> str | None:
    return await pool.fetchval("SELECT owner FROM shard_owners WHERE role = 'worker' AND shard = $1", shard)  # type: ignore[no-any-return]


async def _heartbeats(pool: asyncpg.Pool, member: str, n: int) -> None:
    """Wait until the member has renewed its lease n more times (its rebalancing rounds, not wall time)."""
    seen: list[object] = []

    async def renewed() -> bool:
        at = await pool.fetchval("SELECT heartbeat_at FROM worker_leases WHERE worker_id = $1", member)
        if at is not None and (not seen or seen[-1] != at):
            seen.append(at)
        return len(seen) > n

    await wait_until(renewed, timeout=30)
