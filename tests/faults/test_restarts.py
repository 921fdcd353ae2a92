"""The fault suite (`make test-faults`): under steady Telegram-like load, restart this machine's real
RabbitMQ, restart its real PostgreSQL, SIGKILL the worker, SIGKILL the sender. Every process is a real
`engine ...` subprocess. After each fault: updates answered 200 = inbound rows = replies delivered,
nothing duplicated, no 500, and the time to recover is printed.

The load behaves like the platform: one chat's updates one after another, a non-200 posted again
with back-off. Every loop is bounded in count and time, and all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from engine.fake_platforms import Recorder
from engine.settings import Settings
from tests.harness import TELEGRAM_SECRET, load_tenant, spawn, telegram_update

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.timeout(400)]

CHATS = 20
GAP = 0.4  # seconds between one chat's updates: about 50 updates/s in all
LOAD_SECONDS = 30.0
FAULT_AT = 8.0
DOWN_SECONDS = 5.0
PG_CLUSTER = sorted(p.name for p in Path("/etc/postgresql").glob("*"))[-1] if Path("/etc/postgresql").exists() else ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _run(*cmd: str) -> None:
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    async with asyncio.timeout(120):
        assert await proc.wait() == 0, f"{' '.join(cmd)} failed"


@dataclass
class Load:
    url: str
    channel: str
    accepted: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    first_posted: dict[str, float] = field(default_factory=dict)

    async def chat(self, http: aiohttp.ClientSession, chat: int, update_ids: range, until: float) -> None:
        for update_id in update_ids:
            if time.monotonic() > until:
                return
            text = f"c{chat}-u{update_id}"
            body = telegram_update(update_id, chat, text)
            delay = 0.5
            self.first_posted[text] = time.monotonic()
            for _ in range(30):  # like Telegram: the same update again, backing off, until a 200
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.post(
                        f"{self.url}/webhooks/telegram/{self.channel}",
                        json=body,
                        headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET},
                        timeout=aiohttp.ClientTimeout(total=10),
                    ) as resp:
                        self.statuses[resp.status] += 1
                        if resp.status == 200:
                            self.accepted.add(text)
                            break
                await asyncio.sleep(delay)
                delay = min(delay * 2, 4.0)
            await asyncio.sleep(GAP)


@contextlib.asynccontextmanager
async def engine_processes(settings: Settings) -> AsyncIterator[dict[str, subprocess.Popen[bytes]]]:
    procs = {
        "receiver": spawn(settings, "serve"),
        "worker": spawn(settings, "worker"),
        "sender": spawn(settings, "sender"),
    }
    try:
        yield procs
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


async def _restart_broker(procs: dict[str, subprocess.Popen[bytes]], settings: Settings) -> None:
    await _run("rabbitmqctl", "-q", "stop_app")
    await asyncio.sleep(DOWN_SECONDS)
    await _run("rabbitmqctl", "-q", "start_app")


async def _restart_database(procs: dict[str, subprocess.Popen[bytes]], settings: Settings) -> None:
    await _run("pg_ctlcluster", "--skip-systemctl-redirect", PG_CLUSTER, "main", "stop", "-m", "fast")
    await asyncio.sleep(DOWN_SECONDS)
    await _run("pg_ctlcluster", "--skip-systemctl-redirect", PG_CLUSTER, "main", "start")


def _kill_and_restart(name: str) -> Callable[[dict[str, subprocess.Popen[bytes]], Settings], Awaitable[None]]:
    async def fault(procs: dict[str, subprocess.Popen[bytes]], settings: Settings) -> None:
        procs[name].send_signal(signal.SIGKILL)
        procs[name].wait(timeout=10)
        await asyncio.sleep(1.0)  # the orchestrator notices and starts a new one
        procs[name] = spawn(settings, name if name != "receiver" else "serve")

    return fault


FAULTS = {
    "broker-restart": _restart_broker,
    "database-restart": _restart_database,
    "worker-sigkill": _kill_and_restart("worker"),
    "sender-sigkill": _kill_and_restart("sender"),
}


async def _inbound_rows(settings: Settings) -> int:
    async with asyncio.timeout(60):
        while True:
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn = await asyncpg.connect(settings.database_url)
                try:
                    return int(await conn.fetchval("SELECT count(*) FROM message_history WHERE direction = 'inbound'"))
                finally:
                    await conn.close()
            await asyncio.sleep(1)


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_steady_load_through_a_fault_loses_and_duplicates_nothing(
    settings: Settings, fake_platforms: tuple[str, Recorder], fault: str
) -> None:
    _, recorder = fake_platforms
    port = _free_port()
    settings = settings.model_copy(update={"http_port": port, "lease_ttl": 10.0, "heartbeat_interval": 1.0})
    channel = (await load_tenant(settings))["tg"]
    load = Load(f"http://127.0.0.1:{port}", channel)
    async with engine_processes(settings) as procs, aiohttp.ClientSession() as http:
        async with asyncio.timeout(30):  # the receiver is up
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{load.url}/healthz") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.2)
        until = time.monotonic() + LOAD_SECONDS
        chats = [load.chat(http, 9000 + c, range(c * 1000 + 1, c * 1000 + 200), until) for c in range(CHATS)]
        load_task = asyncio.gather(*chats)
        await asyncio.sleep(FAULT_AT)
        fault_started = time.monotonic()
        await FAULTS[fault](procs, settings)
        fault_ended = time.monotonic()
        async with asyncio.timeout(LOAD_SECONDS + 300):
            await load_task

        async def delivered() -> set[str]:
            return {r.body["text"].removeprefix("Hi Ann! You said: ") for r in recorder.sent("telegram")}

        async with asyncio.timeout(120):
            while not load.accepted <= await delivered():
                await asyncio.sleep(0.5)
        await asyncio.sleep(2.0)  # room for a late duplicate
        for name, proc in procs.items():
            assert proc.poll() is None, f"{name} exited with {proc.returncode}"

    sent = [r.body["text"].removeprefix("Hi Ann! You said: ") for r in recorder.sent("telegram")]
    duplicates = sum(n - 1 for n in Counter(sent).values())
    after = [
        r.received_at - load.first_posted[text]
        for r in recorder.sent("telegram")
        if (text := r.body["text"].removeprefix("Hi Ann! You said: ")) in load.first_posted
        and load.first_posted[text] >= fault_started
    ]
    recovered = min((r.received_at for r in recorder.sent("telegram") if r.received_at > fault_ended), default=0)
    print(
        f"\n{fault}: accepted {len(load.accepted)}, delivered {len(set(sent))}, duplicates {duplicates}, "
        f"statuses {dict(load.statuses)}, fault {fault_ended - fault_started:.1f} s, "
        f"first reply {max(recovered - fault_ended, 0):.1f} s after it ended, "
        f"slowest reply to an update posted during it {max(after, default=0):.1f} s"
    )
    assert load.statuses[500] == 0
    assert set(sent) == load.accepted
    assert duplicates == 0
    assert await _inbound_rows(settings) == len(load.accepted)
