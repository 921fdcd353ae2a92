"""Tools cannot reach the engine's own network (loopback, private, link-local/metadata, IPv6 and
IPv4-mapped forms included), on the first hop or after a redirect, unless the operator allows it; a
request carrying a secret is not redirected to another origin; secrets never come back in what is
stored; answers are capped while streaming and cleaned of U+0000; CR/LF in a header is the tool's error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from engine.brain.tools import egress
from engine.brain.tools.egress import EgressPolicy
from engine.brain.tools.http import MAX_RESPONSE_BYTES, call_http
from engine.brain.tools.tool_models import HttpTool, HttpToolDef

SECRET = "k-8d1f0c2a9b7e"


class Target:
    """A local server: echoes what it got, redirects, streams a huge answer, or answers with NUL."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.redirect_to = ""

    async def echo(self, request: web.Request) -> web.Response:
        self.hits.append(request.path_qs)
        return web.json_response({"key": request.headers.get("X-Api-Key"), "query": dict(request.query)})

    async def fail(self, request: web.Request) -> web.Response:
        self.hits.append(request.path_qs)
        return web.json_response({"error": f"bad key {request.headers.get('X-Api-Key')}"}, status=400)

    async def redirect(self, request: web.Request) -> web.Response:
        self.hits.append(request.path_qs)
        raise web.HTTPFound(self.redirect_to)

    async def huge(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(request.path_qs)
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(5 * MAX_RESPONSE_BYTES // 65536):
            await resp.write(b"a" * 65536)
        return resp

    async def nul(self, request: web.Request) -> web.Response:
        return web.Response(text='{"name": "x\\u0000y", "k\\u0000": "\\u0000"}', content_type="application/json")


@pytest.fixture
async def target(aiohttp_server: Any) -> tuple[Target, int]:
    state = Target()
    app = web.Application()
    for name in ("echo", "fail", "redirect", "huge", "nul"):
        app.router.add_get(f"/{name}", getattr(state, name))
    server = await aiohttp_server(app, host="127.0.0.1")
    return state, int(server.port)


@pytest.fixture
async def guarded() -> AsyncIterator[aiohttp.ClientSession]:
    async with egress.session(EgressPolicy(), 10) as s:  # the default: nothing but public addresses
        yield s


def session_allowing(hosts: str = "", networks: str = "") -> aiohttp.ClientSession:
    return egress.session(EgressPolicy.parse(hosts, networks), 10)


def tool(url: str, **kw: Any) -> HttpTool:
    d = HttpToolDef.model_validate({"slug": "t", "url": url, "retries": 0, "timeout": 5, "secrets": {"key": "x"}, **kw})
    return HttpTool.from_config(d.slug, d.config(), {"key": SECRET}, "tool-1")


def keyed(url: str) -> HttpTool:
    return tool(url, headers={"X-Api-Key": "{{secret.key}}"})


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/echo",
        "http://localhost:{port}/echo",  # a name that resolves to loopback
        "http://[::1]:{port}/echo",
        "http://[::ffff:127.0.0.1]:{port}/echo",  # IPv4-mapped IPv6
        "http://10.1.2.3:{port}/echo",  # private
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
        "http://[fd00:ec2::254]/latest/meta-data/",  # IPv6 metadata (unique local)
        "http://0.0.0.0:{port}/echo",
    ],
)
async def test_internal_addresses_are_refused_on_the_tools_error_edge(
    guarded: aiohttp.ClientSession, target: tuple[Target, int], url: str
) -> None:
    state, port = target
    result = await call_http(guarded, tool(url.format(port=port)), {}, "k")
    assert result.status == "error"
    assert result.error is not None and result.error.startswith("refused: ")
    assert "is not a public address" in result.error
    assert state.hits == []


async def test_allowed_when_the_operator_allows_the_network_or_host(target: tuple[Target, int]) -> None:
    state, port = target
    for hosts, networks in (("", "127.0.0.0/8"), ("127.0.0.1", "")):
        async with session_allowing(hosts, networks) as http:
            result = await call_http(http, tool(f"http://127.0.0.1:{port}/echo"), {}, "k")
        assert result.status == "ok", result.error
    assert len(state.hits) == 2


async def test_redirect_to_loopback_is_refused(target: tuple[Target, int]) -> None:
    state, port = target
    state.redirect_to = f"http://localhost:{port}/echo"  # loopback, not allowed by name
    async with session_allowing("127.0.0.1") as http:
        result = await call_http(http, tool(f"http://127.0.0.1:{port}/redirect"), {}, "k")
    assert result.status == "error"
    assert result.error is not None and "localhost: " in result.error and "is not a public address" in result.error
    assert state.hits == ["/redirect"]  # the hop to loopback was never made


async def test_a_request_with_a_secret_is_not_redirected_to_another_origin(target: tuple[Target, int]) -> None:
    state, port = target
    state.redirect_to = f"http://localhost:{port}/echo"
    async with session_allowing("127.0.0.1,localhost") as http:
        refused = await call_http(http, keyed(f"http://127.0.0.1:{port}/redirect"), {}, "k")
        assert refused.status == "error"
        assert refused.error is not None and "another origin" in refused.error
        assert state.hits == ["/redirect"]
        followed = await call_http(http, tool(f"http://127.0.0.1:{port}/redirect"), {}, "k")  # no secret
        assert followed.status == "ok"
        state.redirect_to = "/echo"  # same origin: followed, secret and all
        same = await call_http(http, keyed(f"http://127.0.0.1:{port}/redirect"), {}, "k")
        assert same.status == "ok"
    assert state.hits == ["/redirect", "/redirect", "/echo", "/redirect", "/echo"]


async def test_secret_values_never_come_back_in_results(target: tuple[Target, int]) -> None:
    _, port = target
    async with session_allowing("127.0.0.1") as http:
        echoed = await call_http(http, keyed(f"http://127.0.0.1:{port}/echo"), {}, "k")
        failed = await call_http(http, keyed(f"http://127.0.0.1:{port}/fail"), {}, "k")
        in_query = tool(f"http://127.0.0.1:{port}/echo", query={"api_key": "{{secret.key}}"})
        queried = await call_http(http, in_query, {}, "k")
        closed = tool("http://127.0.0.1:9/echo", query={"api_key": "{{secret.key}}"})  # refused connection
        unreachable = await call_http(http, closed, {}, "k")
    assert echoed.status == "ok" and echoed.value == {"key": "***", "query": {}}
    assert failed.status == "error" and failed.error == "HTTP 400"
    assert queried.value == {"key": None, "query": {"api_key": "***"}}
    assert unreachable.status == "error" and unreachable.error == "ClientConnectorError (http://127.0.0.1:9)"
    for result in (echoed, failed, queried, unreachable):
        stored = repr((result.request, result.response, result.error, result.value))
        assert SECRET not in stored


async def test_answers_are_capped_while_streaming_and_cleaned_of_nul(target: tuple[Target, int]) -> None:
    _, port = target
    async with session_allowing("127.0.0.1") as http:
        huge = await call_http(http, tool(f"http://127.0.0.1:{port}/huge"), {}, "k")
        nul = await call_http(http, tool(f"http://127.0.0.1:{port}/nul"), {}, "k")
    assert huge.status == "error" and huge.error == f"refused: response larger than {MAX_RESPONSE_BYTES} bytes"
    assert nul.status == "ok" and nul.value == {"name": "xy", "k": ""}
    assert "\x00" not in repr(nul.response)


async def test_cr_lf_in_a_rendered_header_is_the_tools_error(target: tuple[Target, int]) -> None:
    state, port = target
    injected = tool(f"http://127.0.0.1:{port}/echo", headers={"X-Note": "{{note}}"})
    async with session_allowing("127.0.0.1") as http:
        result = await call_http(http, injected, {"note": "hi\r\nX-Evil: 1"}, "k")
    assert result.status == "error" and result.error == "refused: header 'X-Note': contains CR, LF or NUL"
    assert state.hits == []


async def test_a_plain_session_is_refused(target: tuple[Target, int]) -> None:
    _, port = target
    async with aiohttp.ClientSession() as plain:
        result = await call_http(plain, tool(f"http://127.0.0.1:{port}/echo"), {}, "k")
    assert result.status == "error" and "guarded" in (result.error or "")
