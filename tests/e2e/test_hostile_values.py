"""Hostile values from end users and tool servers, interleaved with another tenant's good traffic:
U+0000 in a text and in a tool answer, a tool answer far over the cap, a pathological regex, a tool
redirected to another origin while it carries a secret, an echoed secret, failing sends. The other
tenant is answered, nothing is dead-lettered, the worker keeps running, no row holds U+0000, and no
log line or stored row holds a secret."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from engine.fake_platforms import Fault, Recorder
from engine.settings import Settings
from tests.harness import Running, count, dead_letter_count, load_tenant, running_engine, telegram_update, wait_until

TOOL_KEY = "tk-5b2e77c1d0a9"  # a tool secret
BOT_TOKEN_A = "4242:AAsecret-bot-token-a"  # a channel secret (in the Telegram send URL)
TENANT_A = """
tenant: {slug: a, name: A}
bots: [{slug: a, name: A}]
channels:
  - {slug: tg, type: telegram, bot: a, external_id: a_bot, secrets: {bot_token: "BOT", secret_token: sa}}
rules:
  - {name: tool, priority: 1, conditions: {starts_with: [tool]}, actions: [{start_flow: {bot: a, flow: lookup}}]}
  - {name: redos, priority: 2, conditions: {regex: "(a+)+$"}, actions: [{reply: {text: "A matched"}}]}
flows:
  - bot: a
    slug: main
    default: true
    nodes:
      - {id: hi, type: message, text: "A got {{message.text}}", next: done}
      - {id: done, type: end}
  - bot: a
    slug: lookup
    nodes:
      - {id: call, type: tool, tool: api, args: {which: "{{message.text}}"}, var: result, next: tell, error: oops}
      - {id: tell, type: message, text: "A tool said {{result.name}}", next: done}
      - {id: oops, type: message, text: "A tool failed", next: done}
      - {id: done, type: end}
tools:
  - slug: api
    url: "TOOL/api"
    query: {which: "{{which}}"}
    headers: {X-Api-Key: "{{secret.key}}"}
    retries: 0
    timeout: 5
    secrets: {key: KEY}
""".replace("BOT", BOT_TOKEN_A).replace("KEY", TOOL_KEY)
TENANT_B = """
tenant: {slug: b, name: B}
bots: [{slug: b, name: B, welcome_text: "Hi!", echo: true}]
channels:
  - {slug: tg, type: telegram, bot: b, external_id: b_bot, secrets: {bot_token: "5:B", secret_token: sb}}
"""
A_CHAT, FAILING_CHAT, B_CHAT = 71, 72, 81


class ToolServer:
    def __init__(self) -> None:
        self.redirect_to = ""

    async def api(self, request: web.Request) -> web.StreamResponse:
        which = request.query.get("which", "")
        if which == "tool nul":
            return web.Response(text='{"name": "x\\u0000y"}', content_type="application/json")
        if which == "tool echo":
            return web.json_response({"name": request.headers.get("X-Api-Key")})
        if which == "tool redirect":
            raise web.HTTPFound(self.redirect_to)
        if which == "tool huge":  # 300 MB would be the same: the reader stops past the cap
            resp = web.StreamResponse()
            await resp.prepare(request)
            for _ in range(64):
                await resp.write(b" " * 65536)
            return resp
        return web.json_response({"name": "plain"})


@pytest.fixture
async def tool_base(aiohttp_server: Any) -> tuple[ToolServer, str]:
    state = ToolServer()
    app = web.Application()
    app.router.add_get("/api", state.api)
    server = await aiohttp_server(app, host="127.0.0.1")
    state.redirect_to = f"http://localhost:{server.port}/api?which=tool+echo"  # another origin
    return state, f"http://127.0.0.1:{server.port}"


async def post(engine: Running, channel: str, secret: str, seq: int, chat: int, text: str) -> None:
    assert await engine.post_telegram(channel, telegram_update(seq, chat, text), secret=secret) == 200


async def every_stored_value(pool: asyncpg.Pool) -> str:
    """Every row of every table of the engine's schema, as text."""
    tables = await pool.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
    )
    parts: list[str] = []
    for t in tables:
        rows = await pool.fetch(f'SELECT t::text AS row FROM "{t["relname"]}" t')  # names from the catalog
        parts.extend(r["row"] for r in rows)
    return "\n".join(parts)


async def test_hostile_values_never_stop_the_engine_nor_leak_a_secret(
    settings: Settings,
    pool: asyncpg.Pool,
    fake_platforms: tuple[str, Recorder],
    tool_base: tuple[ToolServer, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    _, recorder = fake_platforms
    _, base = tool_base
    settings = settings.model_copy(update={"tool_allow_hosts": "127.0.0.1,localhost"})
    a = (await load_tenant(settings, TENANT_A.replace("TOOL", base)))["tg"]
    b = (await load_tenant(settings, TENANT_B))["tg"]
    recorder.add_fault(Fault(platform="telegram", chat=str(FAILING_CHAT), status=400, times=None))
    hostile = ["nul \x00 here", "tool nul", "tool huge", "tool echo", "tool redirect", "a" * 29 + "!", "aaaa"]
    async with running_engine(settings) as engine:
        seq = 0
        for i, text in enumerate(hostile):
            seq += 1
            await post(engine, a, "sa", seq, A_CHAT, text)
            seq += 1
            await post(engine, b, "sb", seq, B_CHAT, f"good {i}")  # the other tenant, interleaved
        seq += 1
        await post(engine, a, "sa", seq, FAILING_CHAT, "this reply fails to send")
        async with asyncio.timeout(30):
            await recorder.wait_for(len(hostile), platform="telegram", method="sendMessage", chat=str(B_CHAT))
            await recorder.wait_for(len(hostile), platform="telegram", method="sendMessage", chat=str(A_CHAT))

        async def failed_recorded() -> bool:
            return await count(pool, "SELECT count(*) FROM channel_messages WHERE status = 'failed'") == 1

        await wait_until(failed_recorded)
        assert not any(task.done() for task in engine.tasks)  # no worker or sender ended

    b_texts = [r.body["text"] for r in recorder.sent("telegram", method="sendMessage", chat=str(B_CHAT))]
    assert b_texts == [f"Hi! You said: good {i}" for i in range(len(hostile))]  # in order, every one
    a_texts = [r.body["text"] for r in recorder.sent("telegram", method="sendMessage", chat=str(A_CHAT))]
    assert a_texts == [
        "A got nul  here",  # U+0000 removed at the edge
        "A tool said xy",  # ... and from the tool's answer
        "A tool failed",  # over the size cap: the tool's error edge
        "A tool said ***",  # the echoed secret, scrubbed
        "A tool failed",  # redirect to another origin with the key: refused
        "A got " + "a" * 29 + "!",  # (a+)+$ does not match, in linear time
        "A matched",
    ]
    assert await dead_letter_count(settings) == 0
    assert await count(pool, "SELECT count(*) FROM message_history WHERE direction = 'inbound'") == 2 * len(hostile) + 1
    stored = await every_stored_value(pool)
    assert "\\u0000" not in stored and "\x00" not in stored
    errors = await pool.fetchval("SELECT string_agg(coalesce(error, ''), ' | ') FROM tool_executions")
    assert "response larger than" in errors and "another origin" in errors
    # The engine's own log lines: the fake platforms' access log is the platform's side (Telegram
    # receives its bot token in the URL by design), and the engine serves no access log (access_log=None).
    logged = "\n".join(r.getMessage() + repr(r.args) for r in caplog.records if r.name != "aiohttp.access")
    for secret in (TOOL_KEY, BOT_TOKEN_A, "tk-5b2e", "sa\x00"):
        assert secret not in stored, secret
        assert secret not in logged, secret
