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
from aiohttp import web

from engine.admin.tenant_file import load_bundle, parse_bundle
from engine.bus.topology import Topology
from engine.crypto import Vault
from engine.settings import Settings
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


async def queued_inbound(settings: Settings) -> int:
    """Messages waiting in the inbound shard queues (nothing consumes them in receiver-only tests)."""
    topology = Topology.of(settings)
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        total = 0
        for k in range(settings.shards):
            queue = await channel.declare_queue(topology.inbound_queue(k), passive=True)
            total += queue.declaration_result.message_count or 0
        return total


async def count(pool: asyncpg.Pool, sql: str, *args: Any) -> int:
    return int(await pool.fetchval(sql, *args))
