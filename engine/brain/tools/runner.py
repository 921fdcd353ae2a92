"""Calling a tool by name for a flow: a tenant's HTTP tools, or a built-in. Every call returns a
models.ToolRun (the tool_executions row the worker writes in its batch) and the value for the flow.

Built-ins: kb_search {query, limit, language}; memory_get {key, scope}; memory_set {key, value,
scope} (scope "contact", the default, or "bot"); http_json {method, url, body, headers, timeout}.
Calls are plain awaits on the conversation's own task, so a slow tool delays only its conversation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg

from engine.brain.tools.http import CallResult, call_http, excerpt
from engine.brain.tools.tool_models import HttpTool
from engine.models import ToolRun, stable_id
from engine.store import knowledge

BUILTIN_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class CallContext:
    tenant_id: str
    bot_id: str | None
    conversation_id: str
    contact_id: str
    key: str  # the inbound event's idempotency key + the step: unique per call, stable per redelivery


class ToolError(Exception):
    """A built-in's arguments are unusable; the call fails with this message."""


class Toolbox:
    def __init__(self, pool: asyncpg.Pool, http: aiohttp.ClientSession, tools: dict[str, HttpTool]) -> None:
        self.pool = pool
        self.http = http
        self.tools = tools
        self._builtins: dict[str, Callable[[dict[str, Any], CallContext], Awaitable[Any]]] = {
            "kb_search": self._kb_search,
            "memory_get": self._memory_get,
            "memory_set": self._memory_set,
        }

    async def call(self, name: str, args: dict[str, Any], ctx: CallContext) -> tuple[ToolRun, Any]:
        """Never raises for a failing tool: see ToolRun.status and .error."""
        started_at = time.time()
        key = str(stable_id("tool-call", ctx.key))
        tool = self.tools.get(name)
        if tool is not None:
            result = await call_http(self.http, tool, args, key)
        elif name == "http_json":
            result = await self._http_json(args, key)
        elif name in self._builtins:
            result = await self._builtin(name, args, ctx)
        else:
            result = CallResult("error", 0, 0.0, {"args": excerpt(args)}, None, f"unknown tool {name!r}")
        run = ToolRun(
            id=str(stable_id("tool-run", ctx.key)),
            tool_name=name,
            status=result.status,
            attempts=result.attempts,
            duration_ms=result.duration_ms,
            request=result.request,
            response=result.response,
            error=result.error,
            tool_id=tool.id if tool is not None else None,
            tenant_id=ctx.tenant_id,
            conversation_id=ctx.conversation_id,
            idempotency_key=key,
            started_at=started_at,
        )
        return run, result.value

    async def _http_json(self, args: dict[str, Any], key: str) -> CallResult:
        url = args.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return CallResult("error", 0, 0.0, {"args": excerpt(args)}, None, "http_json needs an http(s) url")
        tool = HttpTool(
            slug="http_json",
            method=str(args.get("method", "GET")).upper(),
            url="{{url}}",
            headers={str(k): str(v) for k, v in (args.get("headers") or {}).items()},
            body="{{body}}" if args.get("body") is not None else None,
            timeout=min(float(args.get("timeout", 10)), 60.0),
            escape_url=False,  # the url is the argument itself
        )
        return await call_http(self.http, tool, {"url": url, "body": args.get("body")}, key)

    async def _builtin(self, name: str, args: dict[str, Any], ctx: CallContext) -> CallResult:
        started = time.perf_counter()
        request = {"args": excerpt(args)}
        try:
            async with asyncio.timeout(BUILTIN_TIMEOUT):
                value = await self._builtins[name](args, ctx)
        except TimeoutError:
            ms = (time.perf_counter() - started) * 1000
            return CallResult("timeout", 1, ms, request, None, f"no answer within {BUILTIN_TIMEOUT:g}s")
        except (ToolError, asyncpg.PostgresError) as exc:
            ms = (time.perf_counter() - started) * 1000
            return CallResult("error", 1, ms, request, None, f"{type(exc).__name__}: {exc}")
        ms = (time.perf_counter() - started) * 1000
        return CallResult("ok", 1, ms, request, {"value": excerpt(value)}, None, value)

    @staticmethod
    def _scope(args: dict[str, Any], ctx: CallContext) -> tuple[str, str]:
        if ctx.bot_id is None:
            raise ToolError("the conversation has no bot")
        key = args.get("key")
        if not isinstance(key, str) or not key:
            raise ToolError("a memory needs a key")
        scope = args.get("scope", "contact")
        if scope not in ("contact", "bot"):
            raise ToolError("scope is contact or bot")
        return (ctx.contact_id if scope == "contact" else knowledge.BOT_SCOPE), key

    async def _memory_get(self, args: dict[str, Any], ctx: CallContext) -> Any:
        scope, key = self._scope(args, ctx)
        return await knowledge.get_memory(self.pool, ctx.bot_id or "", scope, key)

    async def _memory_set(self, args: dict[str, Any], ctx: CallContext) -> Any:
        scope, key = self._scope(args, ctx)
        await knowledge.set_memory(self.pool, ctx.tenant_id, ctx.bot_id or "", scope, key, args.get("value"))
        return args.get("value")

    async def _kb_search(self, args: dict[str, Any], ctx: CallContext) -> Any:
        if ctx.bot_id is None:
            raise ToolError("the conversation has no bot")
        query = str(args.get("query") or "")
        limit = int(args.get("limit", 3))
        language = str(args.get("language", "english"))
        return await knowledge.search_documents(
            self.pool, ctx.tenant_id, ctx.bot_id, query, language=language, limit=limit
        )
