"""`engine demo` (make demo / make run): the whole engine on this machine against the fake platforms.

Migrates, loads examples/tenant.yaml, starts the fake platforms, the receiver, two workers, a
sender and a recovery scheduler as separate processes, posts webhooks for a few conversations as the
platforms would, waits for every reply to be delivered, prints each conversation's transcript from
the database, runs a cart-recovery sequence (workers/demo_recovery.py) and prints its funnel, and
stops every process gracefully (also on Ctrl-C / SIGTERM).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from engine.admin.commands import load
from engine.admin.environment import TenantEnvironment
from engine.admin.tenant_file import Bundle, channel_id, read_bundle, tenant_id
from engine.crypto import generate_key
from engine.loadtest import traffic
from engine.settings import Settings
from engine.store import transcripts
from engine.store.pool import create_pool
from workers import demo_recovery

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "tenant.yaml"
STATE = ROOT / ".demo"

# (channel slug, chat, contact name, messages): conversations with the example shop bot on every
# platform: the menu, an order lookup through the HTTP tool (with a re-prompt), FAQ and knowledge-base
# answers, and a handoff to a human after which the bot stays silent.
CONVERSATIONS = [
    ("telegram", 101, "Ann", ["hi", "where is my order?", "123", "12345"]),
    ("telegram", 102, "Ben", ["hello", "How long does shipping take?"]),
    ("whatsapp", 15550002222, "Cleo", ["hi", "Talk to a person", "hello? anyone?"]),
    ("messenger", 3, "Dan", ["hey", "Questions", "can I return an item?"]),
    ("instagram", 4, "Eve", ["hi"]),
    ("slack", 5, "Finn", ["hello", "order status", "54321"]),
]
PACE = 0.6  # seconds between one person's messages, so each reads like a chat


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _master_key(settings: Settings) -> str:
    if settings.master_key:
        return settings.master_key
    STATE.mkdir(exist_ok=True)
    key_file = STATE / "master.key"
    if not key_file.exists():
        key_file.write_text(generate_key())
        key_file.chmod(0o600)
    return key_file.read_text().strip()


class Processes:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, *args: str) -> None:
        # A session of their own: Ctrl-C reaches only the demo, which stops each child once, in order.
        command = [sys.executable, "-m", "workers.cli", *args]
        self.procs.append((name, subprocess.Popen(command, env=self.env, start_new_session=True)))

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited early with status {proc.returncode}")

    def stop(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs:
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            print(f"  {name} stopped (exit {code})")


async def _wait_ready(url: str, procs: Processes, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            procs.check_alive()
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {limit} s")


async def _post_traffic(receiver: str, bundle: Bundle, run: int) -> int:
    """Post each conversation's messages in order, conversations concurrently, signed as the
    platforms sign them."""
    tid = tenant_id(bundle.tenant.slug)
    specs = {c.slug: c for c in bundle.channels}
    async with aiohttp.ClientSession() as http:

        async def converse(slug: str, chat: int, name: str, texts: list[str]) -> None:
            spec = specs[slug]
            for i, text in enumerate(texts):
                seq = run * 1000 + chat % 100 * 10 + i
                hook = traffic.for_channel(
                    spec.type, channel_id(tid, slug), spec.external_id, spec.secrets, seq, chat, name, text
                )
                async with http.post(receiver + hook.path, data=hook.body, headers=hook.headers) as resp:
                    print(f"  POST {slug:<9} chat {chat} {text!r} -> {resp.status}")
                await asyncio.sleep(PACE)

        await asyncio.gather(*(converse(*conversation) for conversation in CONVERSATIONS))
    return sum(len(texts) for *_, texts in CONVERSATIONS)


async def _wait_delivered(settings: Settings, since: float, posted: int, procs: Processes) -> int:
    """Wait until every posted message is processed and no reply is still queued; return replies sent."""
    pool = await create_pool(settings.database_url)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            procs.check_alive()
            processed, pending, sent = await transcripts.progress(pool, since)
            if processed >= posted and pending == 0:
                return sent
            await asyncio.sleep(0.3)
        raise TimeoutError(f"{processed} of {posted} messages processed, {pending} replies pending")
    finally:
        await pool.close()


async def _print_transcripts(settings: Settings, tenant: str, since: float) -> None:
    pool = await create_pool(settings.database_url)
    try:
        for key, lines in (await transcripts.transcripts(pool, tenant_id(tenant), 20, since)).items():
            print(f"\n--- {key}")
            for line in lines:
                print(f"    {line}")
    finally:
        await pool.close()


async def _demo(settings: Settings, env: dict[str, str], procs: Processes, keep_running: bool) -> None:
    from engine.store.migrations import migrate

    print("migrating", settings.database_url.rsplit("@", 1)[-1])
    await migrate(settings.database_url)
    if await load(settings, EXAMPLE, update=True):  # the demo's own tenant, loaded again on every run
        raise RuntimeError("engine load failed")
    bundle = read_bundle(EXAMPLE, TenantEnvironment.allowing(settings.tenant_env))

    procs.start("fake-platforms", "fake-platforms", "--port", env["DEMO_FAKE_PORT"])
    procs.start("receiver", "serve")
    procs.start("worker-1", "worker")
    procs.start("worker-2", "worker")
    procs.start("sender", "sender")
    procs.start("scheduler", "scheduler")
    receiver = f"http://127.0.0.1:{settings.http_port}"
    await _wait_ready(f"{receiver}/readyz", procs)
    print(f"receiver ready at {receiver}; posting demo webhooks")
    since = time.time()
    posted = await _post_traffic(receiver, bundle, int(since) % 1_000_000)
    sent = await _wait_delivered(settings, since, posted, procs)
    await _print_transcripts(settings, bundle.tenant.slug, since)
    fake = f"http://127.0.0.1:{env['DEMO_FAKE_PORT']}/_fake/sent"
    print(f"\n{posted} messages processed; {sent} replies delivered to the fake platforms ({fake})")
    await demo_recovery.run(settings, receiver, bundle, procs.check_alive)
    if keep_running:
        print("processes keep running; Ctrl-C stops them")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main(settings: Settings, keep_running: bool = False) -> int:
    fake_port, http_port = _free_port(), _free_port()
    fake = f"http://127.0.0.1:{fake_port}"
    settings = settings.model_copy(
        update={
            "master_key": _master_key(settings),
            "http_port": http_port,
            "telegram_api_base": f"{fake}/telegram",
            "graph_api_base": f"{fake}/graph",
            "slack_api_base": f"{fake}/slack/api",
            # The example file reads these two, and its order tool calls the fake shop on loopback,
            # which tools may reach only where the operator allows it (docs/security.md).
            "tenant_env": ",".join(
                filter(None, [settings.tenant_env, "SHOP_API_URL", "SHOP_API_TOKEN", *demo_recovery.ENVIRONMENT])
            ),
            "tool_allow_hosts": ",".join(filter(None, [settings.tool_allow_hosts, "127.0.0.1"])),
        }
    )
    os.environ["SHOP_API_URL"] = f"{fake}/shop"  # the example bot's order tool calls the fake shop
    os.environ.update(demo_recovery.ENVIRONMENT)  # the cart campaign's delays in seconds
    env = settings.environment()
    if "ENGINE_LOG_LEVEL" not in os.environ:
        env["ENGINE_LOG_LEVEL"] = "WARNING"  # keep the demo's own output readable
    env["DEMO_FAKE_PORT"] = str(fake_port)
    procs = Processes(env)
    # SIGTERM to the demo becomes KeyboardInterrupt, so the finally below stops the children too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        asyncio.run(_demo(settings, env, procs, keep_running))
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted")
        return 130
    except (RuntimeError, TimeoutError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        print("stopping processes")
        procs.stop()
