"""Running the engine in a test: load a tenant, start receiver/workers/senders, post webhooks.

The engine's own processes are real (the same classes `engine serve|worker|sender` run), in this
event loop for speed, or as subprocesses where a test must kill one. Only the platforms are fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import orjson
from aio_pika.abc import AbstractIncomingMessage
from aiohttp import web

from engine.admin.tenant_file import load_bundle, parse_bundle
from engine.bus import envelope
from engine.bus.topology import OUTBOUND_TYPES, Topology
from engine.crypto import Vault
from engine.models import ChannelType, OutboundMessage, stable_id
from engine.settings import Settings
from engine.values import utc
from workers import serve
from workers.sender import SenderProcess as Sender
from workers.worker import WorkerProcess as Worker

TELEGRAM_SECRET = "tg-secret-token"
TELEGRAM_TOKEN = "123456:TEST-TOKEN"

BUNDLE = """
tenant: {slug: acme, name: Acme, timezone: Europe/Berlin}
bots:
  - {slug: shop, name: Shop bot, welcome_text: "Hi {name}!", echo: true}
channels:
  - slug: tg
    type: telegram
    bot: shop
    external_id: acme_bot
    secrets: {bot_token: "TOKEN", secret_token: "SECRET"}
""".replace("TOKEN", TELEGRAM_TOKEN).replace("SECRET", TELEGRAM_SECRET)


async def load_tenant(settings: Settings, text: str = BUNDLE) -> dict[str, str]:
    from engine.store.pool import create_pool

    pool = await create_pool(settings.database_url)
    try:
        # update=True: some tests load a second version of their tenant's file
        ids, _ = await load_bundle(pool, Vault(settings.master_key), parse_bundle(text), update=True)
        return ids
    finally:
        await pool.close()


def telegram_update(update_id: int, chat_id: int, text: str, name: str = "Ann") -> dict[str, Any]:
    user = {"id": chat_id, "is_bot": False, "first_name": name}
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": 1_700_000_000 + update_id,
            "text": text,
            "from": user,
            "chat": {"id": chat_id, "type": "private", "first_name": name},
        },
    }


@dataclass
class Running:
    settings: Settings
    url: str
    http: aiohttp.ClientSession
    stops: list[asyncio.Event] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def post_telegram(self, channel_id: str, update: dict[str, Any], secret: str = TELEGRAM_SECRET) -> int:
        async with self.http.post(
            f"{self.url}/webhooks/telegram/{channel_id}",
            json=update,
            headers={"X-Telegram-Bot-Api-Secret-Token": secret},
        ) as resp:
            return resp.status

    def start_worker(self, settings: Settings | None = None) -> Worker:
        worker = Worker(settings or self.settings)
        self._start(worker.run)
        return worker

    def start_sender(self, settings: Settings | None = None) -> None:
        self._start(Sender(settings or self.settings).run)

    def _start(self, run: Any) -> None:
        stop = asyncio.Event()
        self.stops.append(stop)
        self.tasks.append(asyncio.create_task(run(stop)))

    async def stop(self) -> None:
        for stop in self.stops:
            stop.set()
        results = await asyncio.gather(*self.tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result


@contextlib.asynccontextmanager
async def running_engine(settings: Settings, workers: int = 1, senders: int = 1) -> AsyncIterator[Running]:
    """Receiver on a loopback port plus in-process workers and senders; stopped gracefully."""
    runner = web.AppRunner(serve.build_app(settings))  # the receiver and the admin API
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as http:
        engine = Running(settings, f"http://127.0.0.1:{port}", http)
        for _ in range(workers):
            engine.start_worker()
        for _ in range(senders):
            engine.start_sender()
        try:
            yield engine
        finally:
            await engine.stop()
            await runner.cleanup()


def spawn(settings: Settings, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "workers.cli", *args], env=settings.environment())


async def wait_until(check: Any, timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll an async predicate until it returns something truthy."""
    async with asyncio.timeout(timeout):
        while not (result := await check()):
            await asyncio.sleep(interval)
        return result


async def queue_depths(settings: Settings, *queues: str) -> int:
    """Messages ready in these queues, together."""
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        total = 0
        for name in queues:
            queue = await channel.declare_queue(name, passive=True)
            total += queue.declaration_result.message_count or 0
        return total


async def queue_messages(settings: Settings, name: str, *, take: bool = True) -> list[AbstractIncomingMessage]:
    """Every message ready in the queue: taken off it, or (take=False) only read, so that they are back
    in the queue once this closes its channel."""
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        found = []
        while (message := await queue.get(no_ack=take, fail=False)) is not None:
            found.append(message)
        return found


async def queued_inbound(settings: Settings) -> int:
    """Messages waiting in the inbound shard queues (nothing consumes them in receiver-only tests)."""
    topology = Topology.of(settings)
    return await queue_depths(settings, *(topology.inbound_queue(k) for k in range(settings.shards)))


async def dead_letter_count(settings: Settings) -> int:
    return await queue_depths(settings, Topology.of(settings).dead)


async def queued_replies(
    settings: Settings, channel_type: ChannelType = ChannelType.TELEGRAM
) -> list[list[OutboundMessage]]:
    """The replies of each message waiting in a platform's outbound queues (a message may carry
    several), read without taking them."""
    topology = Topology.of(settings)
    first = OUTBOUND_TYPES.index(channel_type) * topology.shards
    found = []
    for slot in range(first, first + topology.shards):
        messages = await queue_messages(settings, topology.outbound_queue(slot), take=False)
        found += [envelope.decode_replies(m.body) for m in messages]
    return found


STORE_REPLY = """
INSERT INTO channel_messages (id, tenant_id, channel_id, conversation_id, body, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, now() - make_interval(secs => $7))
"""


def telegram_reply(tenant_id: str, channel_id: str, chat: int, text: str, created_at: float) -> OutboundMessage:
    """A reply to a Telegram chat, as the worker would stage it."""
    return OutboundMessage(
        id=str(stable_id("test-reply", chat, text)), created_at=created_at, tenant_id=tenant_id,
        channel_id=channel_id, channel_type=ChannelType.TELEGRAM, conversation_id=str(stable_id("test-conv", chat)),
        conversation_key=str(chat), text=text, reply_to={"chat_id": chat},
    )  # fmt: skip


async def store_queued(pool: asyncpg.Pool, reply: OutboundMessage, *, age: float = 0.0) -> None:
    """Its channel_messages row as a worker's commit leaves it: queued, last touched `age` seconds ago."""
    await pool.execute(STORE_REPLY, reply.id, reply.tenant_id, reply.channel_id, reply.conversation_id,
                       orjson.dumps(reply).decode(), utc(reply.created_at), age)  # fmt: skip


async def count(pool: asyncpg.Pool, sql: str, *args: Any) -> int:
    return int(await pool.fetchval(sql, *args))
