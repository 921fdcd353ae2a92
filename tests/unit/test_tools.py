from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from engine.brain.tools import egress
from engine.brain.tools.egress import EgressPolicy
from engine.brain.tools.http import call_http, retry_after
from engine.brain.tools.runner import CallContext, Toolbox
from engine.brain.tools.tool_models import HttpTool, HttpToolDef


class Api:
    """A local test server: /orders/{n} answers per a script of statuses; records every request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[int] = []
        self.delay = 0.0
        self.headers: dict[str, str] = {}
        self.in_flight = 0
        self.most_in_flight = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        self.requests.append({"path": request.path_qs, "headers": dict(request.headers), "body": body})
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        status = self.script.pop(0) if self.script else 200
        if status != 200:
            return web.json_response({"error": status}, status=status, headers=self.headers)
        return web.json_response({"number": request.match_info["n"], "status": "shipped"})


@pytest.fixture
async def api(aiohttp_server: Any) -> tuple[Api, str]:
    state = Api()
    app = web.Application()
    app.router.add_route("*", "/orders/{n}", state.handle)
    server = await aiohttp_server(app)
    return state, str(server.make_url(""))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # The test servers listen on loopback, which tools may reach only when the operator allows it.
    async with egress.session(EgressPolicy.parse("127.0.0.1", ""), 30) as s:
        yield s


def tool(base: str, **kw: Any) -> HttpTool:
    d = HttpToolDef.model_validate({
        "slug": "order_status", "url": base + "/orders/{{number}}", "method": "POST",
        "headers": {"Authorization": "Bearer {{secret.token}}"}, "query": {"lang": "{{lang}}"},
        "body": {"number": "{{number}}", "note": "from {{who}}"}, "secrets": {"token": "x"}, **kw,
    })  # fmt: skip
    return HttpTool.from_config(d.slug, d.config(), {"token": "s3cret"}, "tool-1")


async def test_ok_call_renders_templates_and_sends_the_idempotency_key(api: Any, session: Any) -> None:
    state, base = api
    result = await call_http(session, tool(base), {"number": 12345, "lang": "es", "who": "Ana"}, "key-1")
    assert result.status == "ok"
    assert result.attempts == 1
    assert result.value == {"number": "12345", "status": "shipped"}
    sent = state.requests[0]
    assert sent["path"] == "/orders/12345?lang=es"
    assert sent["headers"]["Idempotency-Key"] == "key-1"
    assert sent["headers"]["Authorization"] == "Bearer s3cret"
    assert sent["body"] == {"number": 12345, "note": "from Ana"}  # a lone placeholder keeps its type
    assert result.request["headers"]["Authorization"] == "Bearer ***"  # never stored
    assert "s3cret" not in str(result.request)


async def test_url_values_are_escaped(api: Any, session: Any) -> None:
    state, base = api
    await call_http(session, tool(base), {"number": "1/../admin?x=1"}, "k")
    # One path segment: "/" and "?" are escaped (yarl shows "=" unescaped, legal in a path).
    assert state.requests[0]["path"] == "/orders/1%2F..%2Fadmin%3Fx=1?lang="


async def test_500_twice_then_200_retries_with_the_same_key(api: Any, session: Any) -> None:
    state, base = api
    state.script = [500, 503]
    result = await call_http(session, tool(base, retries=2), {"number": 1}, "key-2")
    assert (result.status, result.attempts) == ("ok", 3)
    assert {r["headers"]["Idempotency-Key"] for r in state.requests} == {"key-2"}


async def test_gives_up_after_its_retries(api: Any, session: Any) -> None:
    state, base = api
    state.script = [500, 500, 500]
    result = await call_http(session, tool(base, retries=1), {"number": 1}, "k")
    assert (result.status, result.attempts, result.error) == ("error", 2, "HTTP 500")
    assert result.response == {"status": 500, "body": '{"error": 500}'}


async def test_429_waits_its_retry_after(api: Any, session: Any) -> None:
    state, base = api
    state.script, state.headers = [429], {"Retry-After": "0.3"}
    started = time.perf_counter()
    result = await call_http(session, tool(base), {"number": 1}, "k")
    assert (result.status, result.attempts) == ("ok", 2)
    assert time.perf_counter() - started >= 0.3


async def test_429_asking_too_long_fails_at_once(api: Any, session: Any) -> None:
    state, base = api
    state.script, state.headers = [429], {"Retry-After": "120"}
    result = await call_http(session, tool(base, max_retry_after=5), {"number": 1}, "k")
    assert (result.status, result.attempts, result.error) == ("error", 1, "HTTP 429")


async def test_4xx_is_not_retried(api: Any, session: Any) -> None:
    state, base = api
    state.script = [404]
    result = await call_http(session, tool(base), {"number": 1}, "k")
    assert (result.status, result.attempts, result.error) == ("error", 1, "HTTP 404")


async def test_timeout_is_enforced_and_not_retried(api: Any, session: Any) -> None:
    state, base = api
    state.delay = 30.0  # far beyond the tool's timeout (and the test's own)
    result = await call_http(session, tool(base, timeout=1.0), {"number": 1}, "k")
    assert (result.status, result.attempts) == ("timeout", 1)
    assert len(state.requests) == 1


async def test_connect_errors_are_retried(session: Any) -> None:
    result = await call_http(session, tool("http://127.0.0.1:9", retries=2), {"number": 1}, "k")
    assert (result.status, result.attempts) == ("error", 3)
    assert "Connect" in (result.error or "")


async def test_a_slow_tool_does_not_block_other_calls(api: Any, session: Any) -> None:
    state, base = api
    state.delay = 0.5
    results = await asyncio.gather(*(call_http(session, tool(base), {"number": i}, f"k{i}") for i in range(10)))
    assert all(r.status == "ok" for r in results)
    assert state.most_in_flight == 10  # all at the tool's server at once: concurrent, not one after another


async def test_toolbox_records_a_tool_run_with_stable_ids(api: Any, session: Any) -> None:
    state, base = api
    box = Toolbox(None, session, {"order_status": tool(base)})  # type: ignore[arg-type]
    ctx = CallContext("tenant-1", "bot-1", "conv-1", "contact-1", "ch:ev-1:flow:lookup:3")
    run, value = await box.call("order_status", {"number": 7}, ctx)
    again, _ = await box.call("order_status", {"number": 7}, ctx)  # a redelivery of the same event
    assert value["status"] == "shipped"
    assert (run.status, run.tool_id, run.tenant_id, run.conversation_id) == ("ok", "tool-1", "tenant-1", "conv-1")
    assert run.id == again.id
    assert run.idempotency_key == again.idempotency_key
    assert state.requests[0]["headers"]["Idempotency-Key"] == run.idempotency_key
    unknown, _ = await box.call("nope", {}, ctx)
    assert (unknown.status, unknown.error) == ("error", "unknown tool 'nope'")


async def test_http_json_builtin(api: Any, session: Any) -> None:
    state, base = api
    box = Toolbox(None, session, {})  # type: ignore[arg-type]
    ctx = CallContext("t", "b", "c", "p", "k")
    run, value = await box.call("http_json", {"method": "post", "url": f"{base}/orders/9?x=1", "body": {"a": 1}}, ctx)
    assert run.status == "ok"
    assert value["number"] == "9"
    assert state.requests[0]["body"] == {"a": 1}
    assert state.requests[0]["path"] == "/orders/9?x=1"


def test_retry_after_parsing() -> None:
    assert retry_after("3") == 3.0
    assert retry_after(None) is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after("soon") is None


def test_undeclared_secret_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"headers: secret.token is not one of the tool's secrets"):
        HttpToolDef.model_validate({"slug": "x", "url": "https://a.b", "headers": {"A": "{{secret.token}}"}})
